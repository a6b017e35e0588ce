# Stage 2: training. FP32 baselines from scratch; each quantized run starts from the run before
# it in its chain (4-bit from FP32, 3 from 4, 2 from 3). Only metrics.json, written when a run
# completes, is declared: the run folder's checkpoint.pt must survive a killed or pre-empted
# job (Snakemake deletes the declared outputs of incomplete jobs), so re-running the workflow
# resumes the run from its last completed epoch.


rule train_fp32:
    input:
        unpack(train_inputs(lambda w: "fp32", lambda w: 32)),
    output:
        f"{RESULTS}/runs/{{dataset}}/{{arch}}/{{schedule}}/fp32-w32/seed{{seed}}/metrics.json",
    params:
        args=lambda w: train_args(run_of(w, "fp32", 32)),
    log:
        f"{LOGS}/runs/{{dataset}}/{{arch}}/{{schedule}}/fp32-w32/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/runs/{{dataset}}/{{arch}}/{{schedule}}/fp32-w32/seed{{seed}}.tsv"
    threads: config["train_threads"]
    resources:
        gpu=TRAIN_GPUS,
        mem_mb=8000,
        runtime=24 * 60,
    shell:
        "{APOT} train {params.args} {DEVICE_ARGS} --threads {threads} --no-progress >> {log} 2>&1"


rule train_quantized:
    input:
        unpack(train_inputs(lambda w: w.scheme, lambda w: w.bits)),
    output:
        f"{RESULTS}/runs/{{dataset}}/{{arch}}/{{schedule}}/{{scheme}}-w{{bits}}/seed{{seed}}/metrics.json",
    params:
        args=lambda w: train_args(run_of(w, w.scheme, w.bits)),
    log:
        f"{LOGS}/runs/{{dataset}}/{{arch}}/{{schedule}}/{{scheme}}-w{{bits}}/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/runs/{{dataset}}/{{arch}}/{{schedule}}/{{scheme}}-w{{bits}}/seed{{seed}}.tsv"
    threads: config["train_threads"]
    resources:
        gpu=TRAIN_GPUS,
        mem_mb=8000,
        runtime=24 * 60,
    shell:
        "{APOT} train {params.args} {DEVICE_ARGS} --threads {threads} --no-progress >> {log} 2>&1"
