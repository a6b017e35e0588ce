# apot-repro: the whole study as one DAG. This file only orchestrates: it loads and validates
# config.yaml, expands the experiment matrix (apot.study) and includes the rules of each stage.
#   snakemake --cores 2                      # the default preset (quick)
#   snakemake --cores 2 --config preset=smoke on_missing_data=skip
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/cost.smk"
include: "rules/authors.smk"
include: "rules/report.smk"


rule all:
    input:
        REPORT_FILES,
    default_target: True
