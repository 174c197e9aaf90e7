"""mkdocs hook: the configuration reference page, generated from the parameter blocks' models at build time.

The page is not a file in docs/: it is rendered by :func:`timam.config.reference.reference_markdown`
from ``timam.hooks.parameter_blocks()`` each time the site builds, so it cannot drift from the code.
"""

from __future__ import annotations

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

PAGE = "reference/configuration.md"

INTRO = """# Configuration reference

Every parameter of every block, generated from the block's pydantic model when this site is built
(`src/timam/config/reference.py`), so it says what the code says. Each block lives in
`conf/base/parameters_<pipeline>.yml`, which lists every key with the same default (a test,
`tests/config/test_conf_defaults.py`, checks that the YAML and the models agree); a dataset
environment (`conf/<env>/parameters.yml`) and `conf/local/` override it, and `--params` overrides
all of them for one run (`--params "training.epochs=3,training.seed=1"`).

Every block is checked when a run starts, before any node: an unknown key stops the run naming the
nearest known one ("Unknown parameter training.epoch; did you mean 'epochs'?"), and a value out of
its type or bounds names its key and the rule. `null` for a key whose type does not allow it means
that key's default.

*Default* is the value the model and `conf/base` share. "{from_conf}" marks a key whose value
comes from the environment's `globals.yml` or its own files (a path under its data folder, its
published results, a study's rows); "{from_data}" marks one the run counts from the data or reads
from the checkpoint; "{required}" marks a key that an entry or optional block must give.

"""


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated page; nav names it like any other."""
    from timam.config.reference import FROM_CONF, FROM_DATA, REQUIRED, reference_markdown
    from timam.hooks import parameter_blocks

    intro = INTRO.format(from_conf=FROM_CONF, from_data=FROM_DATA, required=REQUIRED)
    files.append(File.generated(config, PAGE, content=intro + reference_markdown(parameter_blocks())))
    return files
