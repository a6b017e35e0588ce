# Stage: packed models. Every quantized run's best weights are written as integer codes
# (apot export: runs/<run>/packed.safetensors), and the file is read back and checked against
# the checkpoint on the first test images of each class of the run's data: the same logits
# (levels arithmetic). packed.json holds the sizes and the check; the report lists them.


rule export_packed:
    input:
        metrics=run_metrics("{run}"),
        data=lambda w: LAYOUT.manifest(run_of(w).data),
    output:
        packed=run_packed("{run}"),
        result=run_packed_result("{run}"),
    params:
        args=lambda w: export_args(run_of(w)),
    wildcard_constraints:
        run=QUANTIZED_PATTERN,
    log:
        LAYOUT.log("runs/{run}.export"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "{APOT} export {params.args} --threads {threads} > {log} 2>&1"
