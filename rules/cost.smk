# Stage: the cost model. cost_tables: operation counts (MACs, FixOPs, shifts, adds) of every
# model and bit-width of the preset's studies, in each scheme, plus the paper's cost
# configurations (ResNet-18 5/3-bit, ResNet-50 4-bit); it needs no data and no trained weights.
# run_cost: the expected shifts and adds of one trained quantized run, over the levels its
# best weights actually use; as a training job, apot cost reads its settings from the study
# file (apot.workflow.study.cost_settings).


rule cost_tables:
    input:
        study=STUDY_FILE,
    output:
        LAYOUT.preset_file(COST_TABLES),
    log:
        LAYOUT.log("cost_tables"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "{APOT} cost-tables --study {input.study:q} --out {output:q} > {log:q} 2>&1"


rule run_cost:
    input:
        run_metrics("{run}"),
    output:
        run_cost("{run}"),
    params:
        settings=cost_settings_of,
    wildcard_constraints:
        run=QUANTIZED_PATTERN,
    log:
        LAYOUT.log("runs/{run}.cost"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "{APOT} cost --study {STUDY_FILE:q} --run {wildcards.run:q} --threads {threads} "
        "> {log:q} 2>&1"
