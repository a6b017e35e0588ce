# Stage 2: training. FP32 baselines from scratch, or from a released model (a warm chain: the
# staged start); each quantized run starts from the run before it in its chain (4-bit from
# FP32, 3 from 4, 2 from 3). {run} is a run's folder under runs/ (apot.workflow.study.run_path),
# constrained to the preset's runs; apot train reads its settings from the study file. Only metrics.json, written when a run
# completes, is declared: the run folder's checkpoint.pt must survive a killed or pre-empted
# job (Snakemake deletes the declared outputs of incomplete jobs), so re-running the workflow
# resumes the run from its last completed epoch.


rule train_fp32:
    input:
        unpack(train_inputs),
    output:
        run_metrics("{run}"),
    params:
        settings=train_settings_of,
    wildcard_constraints:
        run=FP32_PATTERN,
    log:
        LAYOUT.log("runs/{run}"),
    benchmark:
        LAYOUT.run_benchmark("{run}")
    threads: config["train_threads"]
    resources:
        gpu=TRAIN_GPUS,
        mem_mb=8000,
        runtime=24 * 60,
    shell:
        "{APOT} train --study {STUDY_FILE:q} --run {wildcards.run:q} {DEVICE_ARGS} "
        "--threads {threads} --no-progress --restart-if-changed >> {log:q} 2>&1"


# The same job for a quantized run: its own name, so that Snakemake's summary and the job times
# tell FP32 baselines and quantized steps apart.
use rule train_fp32 as train_quantized with:
    wildcard_constraints:
        run=QUANTIZED_PATTERN,
