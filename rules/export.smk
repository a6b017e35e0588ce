# Stage: packed and ONNX models. Every quantized run's best weights are written as integer codes
# (apot export: runs/<run>/packed.safetensors), and the file is read back and checked against
# the checkpoint on the first test images of each class of the run's data: the same logits
# (levels arithmetic). packed.json holds the sizes and the check; the report lists them. As a
# training job, apot export reads the run's settings from the study file
# (apot.workflow.study.export_settings), which keeps the command short.


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


# The same weights as an ONNX model (apot export --format onnx, qdq form: ONNX Runtime's int8
# kernels) for every quantized run whose level sets fit 8-bit integers (ONNX_RUNS), checked in ONNX Runtime on the first 100 test images of each class of the run's
# data: its top-1 beside the checkpoint's, the predictions that differ, and its images per
# second against the same network in float32 (onnx.json; the report lists them).
rule export_onnx:
    input:
        metrics=run_metrics("{run}"),
        data=lambda w: LAYOUT.manifest(run_of(w).data),
    output:
        model=run_onnx("{run}"),
        result=run_onnx_result("{run}"),
    params:
        settings=onnx_settings_of,
    wildcard_constraints:
        run=ONNX_PATTERN,
    log:
        LAYOUT.log("runs/{run}.onnx"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "{APOT} export --study {STUDY_FILE:q} --run {wildcards.run:q} --format onnx "
        "--threads {threads} > {log:q} 2>&1"
