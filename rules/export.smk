# Stage: packed models. Every quantized run's best weights are written as integer codes
# (apot export: runs/<run>/packed.safetensors), and the file is read back and checked against
# the checkpoint on the first test images of each class of the run's data: the same logits
# (levels arithmetic). packed.json holds the sizes and the check; the report lists them. As a
# training job, apot export reads the run's settings from the study file
# (apot.study.export_settings), which keeps the command short.


rule export_packed:
    input:
        metrics=run_metrics("{run}"),
        data=lambda w: LAYOUT.manifest(run_of(w).data),
    output:
        packed=run_packed("{run}"),
        result=run_packed_result("{run}"),
    params:
        settings=export_settings_of,
    wildcard_constraints:
        run=QUANTIZED_PATTERN,
    log:
        LAYOUT.log("runs/{run}.export"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "{APOT} export --study {STUDY_FILE:q} --run {wildcards.run:q} --threads {threads} "
        "> {log:q} 2>&1"
