# Stage 1: datasets. One prepared folder per dataset of the preset, by its name in the preset's
# datasets (uint8 tensors + manifest with the source and its sha256; for ImageNet a manifest of
# the folder).


rule prepare_data:
    output:
        LAYOUT.manifest("{data}"),
    params:
        subset=subset_args,
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        LAYOUT.log("data/{data}"),
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
    shell:
        "{APOT} prepare-data --out {params.out:q} {params.subset} "
        "{SOURCE_ARGS} > {log:q} 2>&1"
