# The authors' released CIFAR-10 ResNet-20 checkpoints (FP32, 4, 3, 2 bits), evaluated by our
# code on this preset's prepared CIFAR-10 test split (AUTHORS_DATA), for the report; and staged
# as the start of a warm chain (study key start: authors), as is torchvision's pretrained model
# (start: torchvision; torchvision's weights API reads torch's cache or downloads, so the rule
# stays on the submitting host, like the dataset download). Runs only where the files
# are found (config key authors_checkpoints, or the mirror's apot-authors-checkpoints/); the
# folder (AUTHORS_DIR) is not an input, so that reaching it another way re-runs nothing.


rule eval_authors:
    input:
        data=LAYOUT.manifest(AUTHORS_DATA),
    output:
        result=authors_result("{bits}"),
        predictions=LAYOUT.authors_predictions("{bits}"),
    params:
        data=data_dir(AUTHORS_DATA),
    log:
        LAYOUT.log(f"authors/{AUTHORS_ARCH}-w{{bits}}"),
    threads: config["train_threads"]
    resources:
        gpu=TRAIN_GPUS,
        mem_mb=4000,
        runtime=30,
    shell:
        "{APOT} eval --arch " + AUTHORS_ARCH + " --bits {wildcards.bits} --checkpoint "
        "{AUTHORS_DIR}/" + AUTHORS_FILE.format(bits="{wildcards.bits}") + " --data {params.data:q} "
        "--split test {DEVICE_ARGS} --threads {threads} "
        "--out {output.result:q} --predictions {output.predictions:q} > {log:q} 2>&1"


rule stage_authors_start:
    output:
        LAYOUT.start(start_file("authors", AUTHORS_ARCH, "{bits}")),
    log:
        LAYOUT.log(f"starts/authors-{AUTHORS_ARCH}-w{{bits}}"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{APOT} stage-start --start authors --arch " + AUTHORS_ARCH + " --checkpoint "
        "{AUTHORS_DIR}/" + AUTHORS_FILE.format(bits="{wildcards.bits}") + " --out {output:q} "
        "> {log:q} 2>&1"


rule stage_torchvision_start:
    output:
        LAYOUT.start(start_file("torchvision", "{arch}", None)),
    log:
        LAYOUT.log("starts/torchvision-{arch}"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{APOT} stage-start --start torchvision --arch {wildcards.arch} --out {output:q} "
        "> {log:q} 2>&1"
