# apot-repro: the whole study as one DAG. This file only orchestrates: it loads and validates
# config.yaml, expands the experiment matrix (apot.workflow.study) and includes the rules of each stage.
#   snakemake --cores 2                      # the default preset (quick)
#   snakemake --cores 2 --config preset=smoke on_missing_data=skip
#   snakemake --report report.zip --config preset=smoke on_missing_data=skip   # after a run
from snakemake.utils import min_version, validate

from apot.workflow.configfile import check_yaml

min_version("9.0")

# Snakemake's own error for broken YAML has no line or column: check the file first.
check_yaml("config.yaml")


configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


# The landing page of Snakemake's own report (snakemake --report).
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/cost.smk"
include: "rules/export.smk"
include: "rules/authors.smk"
include: "rules/report.smk"


# Snakemake rebuilds a missing file only when something that needs it must run: once the
# report is up to date, a deleted metrics.json would go unnoticed. These two aggregate rules
# ask for every result by name, so that a missing one is made again, with everything
# downstream of it; force_damaged (rules/common.smk) does the same for results whose files
# fail their checks.
rule study:
    input:
        rules.summarize.input,
        rules.summarize.output,
        force_damaged,


rule all:
    input:
        rules.report.output,
        rules.study.input,
    default_target: True
