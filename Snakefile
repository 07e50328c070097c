# weightspace: the shared low-rank weight subspace of a collection of models.
# Stages (one file each in workflow/rules/): zoo/collect -> extract -> subspace -> project
# -> evaluate -> figures; adapt and merge put the subspace to work. Logic lives in the weightspace package (src/weightspace).
from snakemake.utils import min_version, validate

min_version("9.21.1")


# The default config (the built-in zoo) only when no --configfile is given: Snakemake would
# otherwise merge the two, and a Hub collection's run would also run the zoo's collections.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


from pathlib import Path

from weightspace.configcheck import absolutize, canonical_order, check_config

check_config(config, Path(workflow.basedir) / "config" / "schema.yaml")  # one line per mistake (Snakemake's would print the schema)
validate(config, "config/schema.yaml")  # fills in the defaults
if config.get("origin"):  # run in another working directory (make run CONFIG=…: runs/<config>/)
    absolutize(config, config["origin"])
canonical_order(config)  # the same settings in another key order rerun nothing


include: "workflow/rules/common.smk"
include: "workflow/rules/zoo.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/subspace.smk"
include: "workflow/rules/project.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/bank.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/align.smk"
include: "workflow/rules/adapt.smk"
include: "workflow/rules/merge.smk"
include: "workflow/rules/sweep.smk"


report: "workflow/report/workflow.rst"


# Cheap steps stay on the submitting host with a cluster executor; so does fetch when asked
# (compute nodes without network): fetch_on_submit_host in any collection's config.
localrules:
    collection_listing,


if any(c.get("fetch_on_submit_host") for c in config["collections"].values()):

    localrules:
        fetch,


rule all:
    input:
        all_outputs(),
    default_target: True
