# Stage 3: the summary of every run (results/<preset>/summary.{json,csv}, histories.csv: the
# files `dvc metrics show` and `dvc plots` read) and the report rendered from it.
# The outputs marked report() make up Snakemake's own report (`snakemake --report report.zip`);
# their captions are in report/captions/ (paths relative to this file).


rule summarize:
    input:
        runs=[run_metrics(path) for path in RUNS],
        data=[LAYOUT.manifest(d) for d in DATA_NAMES],
        cost=LAYOUT.preset_file(COST_TABLES),
        study=STUDY_FILE,
        run_costs=[run_cost(path) for path in QUANTIZED_RUNS],
        packed=[run_packed_result(path) for path in QUANTIZED_RUNS],
        onnx=[run_onnx_result(path) for path in ONNX_RUNS],
        authors=[authors_result(bits) for bits in AUTHORS_BITS],
    output:
        json=LAYOUT.summary("json"),
        csv=report(LAYOUT.summary("csv"), caption="../report/captions/summary.rst",
                   category="Tables", labels={"table": "every run"}),
        accuracy=LAYOUT.preset_file(ACCURACY),
        histories=report(LAYOUT.preset_file(HISTORIES), caption="../report/captions/histories.rst",
                         category="Tables", labels={"table": "per-epoch histories"}),
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
        "{APOT} summarize --results {params.results:q} --benchmarks {params.benchmarks:q} "
        "--cost {input.cost:q} --study {input.study:q} "
        "> {log:q} 2>&1"


# The verdicts as data: every claim's comparisons with their margins and intervals, read from
# summary.json and the runs' per-image predictions (apot/reporting/noise.py states the rule).
rule claims:
    input:
        summary=LAYOUT.summary("json"),
        cited="apot/reporting/cited.yaml",
        code=["apot/reporting/claims.py", "apot/reporting/noise.py"],
    output:
        LAYOUT.preset_file(CLAIMS),
    log:
        LAYOUT.log("claims"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{APOT} claims --summary {input.summary:q} --out {output:q} > {log:q} 2>&1"


rule report:
    input:
        summary=LAYOUT.summary("json"),
        claims=LAYOUT.preset_file(CLAIMS),
        template="report/templates/report.html.j2",
        css="report/templates/report.css",
        cited="apot/reporting/cited.yaml",
        # the code that renders it: a change to a rule, a figure or a table re-renders
        code=["apot/reporting/render.py", "apot/reporting/figures.py"],
    output:
        html=report(REPORT_FILES[0], caption="../report/captions/report.rst",
                    category="Report", labels={"format": "HTML"}),
        pdf=report(REPORT_FILES[1], caption="../report/captions/report.rst",
                   category="Report", labels={"format": "PDF"}),
        figures=report(directory(REPORT_FIGURES), patterns=["{name}.svg"],
                       caption="../report/captions/figure.rst", category="Figures",
                       labels={"figure": "{name}"}),
        tables=report(directory(REPORT_TABLES), patterns=["{name}.csv"],
                      caption="../report/captions/table.rst", category="Tables",
                      labels={"table": "{name}"}),
        # the resolved config, which the PDF points to instead of printing it
        config=f"{LAYOUT.report_dir}/config.yaml",
    params:
        out_dir=LAYOUT.report_dir,
    log:
        LAYOUT.log("report"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{APOT} report --summary {input.summary:q} --claims {input.claims:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"
