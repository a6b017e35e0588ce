# Stage 3: the summary of every run (results/<preset>/summary.{json,csv}, histories.csv: the
# files `dvc metrics show` and `dvc plots` read) and the report rendered from it.


rule summarize:
    input:
        runs=[run_metrics(path) for path in RUNS],
        data=[f"{data_dir(d)}/manifest.json" for d in DATA_NAMES],
        cost=f"{RESULTS}/cost.json",
        run_costs=[run_cost(path) for path in QUANTIZED_RUNS],
        authors=[authors_result(bits) for bits in AUTHORS_BITS],
    output:
        json=f"{RESULTS}/summary.json",
        csv=f"{RESULTS}/summary.csv",
        accuracy=f"{RESULTS}/accuracy.json",
        histories=f"{RESULTS}/histories.csv",
    params:
        results=RESULTS,
        benchmarks=BENCHMARKS,
        study=study_json(),
    log:
        f"{LOGS}/summarize.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{APOT} summarize --results {params.results} --benchmarks {params.benchmarks} "
        "--cost {input.cost} --study {params.study:q} "
        "> {log} 2>&1"


rule report:
    input:
        summary=f"{RESULTS}/summary.json",
        template="report/templates/report.html.j2",
        css="report/templates/report.css",
        cited="apot/cited.yaml",
        # the code that renders it: a change to a rule, a figure or a table re-renders
        code=["apot/report.py", "apot/claims.py", "apot/figures.py"],
    output:
        REPORT_FILES,
    log:
        f"{LOGS}/report.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{APOT} report --summary {input.summary} --out-dir report/build > {log} 2>&1"
