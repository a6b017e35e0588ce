# Stage 3: the summary of every run (results/<preset>/summary.{json,csv}, histories.csv: the
# files `dvc metrics show` and `dvc plots` read) and the report rendered from it.


rule summarize:
    input:
        runs=[run_metrics(path) for path in RUNS],
        data=[LAYOUT.manifest(d) for d in DATA_NAMES],
        cost=LAYOUT.cost_tables,
        study=LAYOUT.study,
        run_costs=[run_cost(path) for path in QUANTIZED_RUNS],
        authors=[authors_result(bits) for bits in AUTHORS_BITS],
    output:
        json=LAYOUT.summary("json"),
        csv=LAYOUT.summary("csv"),
        accuracy=LAYOUT.accuracy,
        histories=LAYOUT.histories,
    params:
        results=LAYOUT.results,
        benchmarks=LAYOUT.benchmarks,
    log:
        LAYOUT.log("summarize"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{APOT} summarize --results {params.results} --benchmarks {params.benchmarks} "
        "--cost {input.cost} --study {input.study} "
        "> {log} 2>&1"


rule report:
    input:
        summary=LAYOUT.summary("json"),
        template="report/templates/report.html.j2",
        css="report/templates/report.css",
        cited="apot/cited.yaml",
        # the code that renders it: a change to a rule, a figure or a table re-renders
        code=["apot/report.py", "apot/claims.py", "apot/figures.py"],
    output:
        REPORT_FILES,
    log:
        LAYOUT.log("report"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{APOT} report --summary {input.summary} --out-dir report/build > {log} 2>&1"
