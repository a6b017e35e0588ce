# Stage: the cost model. Operation counts (MACs, FixOPs, shifts, adds) of every model and
# bit-width of the preset's studies, in each scheme, plus the paper's cost configurations
# (ResNet-18 5/3-bit, ResNet-50 4-bit). It needs no data and no trained weights.


rule cost_tables:
    output:
        f"{RESULTS}/cost.json",
    params:
        study=study_json(),
    log:
        f"{LOGS}/cost_tables.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "{APOT} cost-tables --study {params.study:q} --out {output} > {log} 2>&1"
