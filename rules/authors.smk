# The authors' released CIFAR-10 ResNet-20 checkpoints (FP32, 4, 3, 2 bits), evaluated by our
# code on this preset's prepared CIFAR-10 test split, for the report. Runs only where the files
# are found (config key authors_checkpoints, or the mirror's apot-authors-checkpoints/); the
# folder (AUTHORS_DIR) is not an input, so that reaching it another way re-runs nothing.


rule eval_authors:
    input:
        data=f"{data_dir('cifar10')}/manifest.json",
    output:
        f"{RESULTS}/authors/resnet20-w{{bits}}.json",
    params:
        data=data_dir("cifar10"),
    wildcard_constraints:
        bits="32|[2-8]",
    log:
        f"{LOGS}/authors/resnet20-w{{bits}}.log",
    threads: config["train_threads"]
    resources:
        gpu=TRAIN_GPUS,
        mem_mb=4000,
        runtime=30,
    shell:
        "OMP_NUM_THREADS={threads} {APOT} eval --arch resnet20 --bits {wildcards.bits} "
        "--checkpoint {AUTHORS_DIR}/res20_{wildcards.bits}bit.pth.tar --data {params.data} "
        "--split test {DEVICE_ARGS} "
        "--out {output} > {log} 2>&1"
