"""Config files through real `snakemake -n` runs: duplicate keys refused with file:line, schema errors one line
each (key path, what was found, what was expected), YAML syntax errors with file, line and column."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import yaml

from prism.config import ConfigError, read_config_file, schema_errors

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
DEMO = (ROOT / "config/demo.yaml").read_text()
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}


def dry_run(workdir: Path, *args: str, snakefile: Path = ROOT / "Snakefile") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(snakefile), "-n", "--directory", str(workdir),
                           *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def edit(old: str, new: str, text: str = DEMO) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def line_of(text: str, needle: str, nth: int = 1) -> int:
    return [i for i, line in enumerate(text.splitlines(), 1) if needle in line][nth - 1]


def test_duplicate_keys_are_refused_with_file_and_line(tmp_path):
    text = edit("  synthB:\n", "  synthA:\n")  # a cell line written twice: YAML would keep the second synthA
    text = edit("  lr: 1.0e-2 ", "  lr: 1.0e-3\n  lr: 1.0e-2 ", text)
    cfg = write(tmp_path / "dup.yaml", text)
    p = dry_run(tmp_path / "w", "--configfile", str(cfg))
    assert p.returncode == 1
    first, second = line_of(text, "  synthA:"), line_of(text, "  synthA:", 2)
    lr1, lr2 = line_of(text, "  lr:"), line_of(text, "  lr:", 2)
    assert p.stderr.strip().splitlines() == [
        f"config error: {cfg}:{second}: duplicate key cell_lines.synthA (first at line {first}): YAML keeps only the last one",
        f"config error: {cfg}:{lr2}: duplicate key training.lr (first at line {lr1}): YAML keeps only the last one",
    ], p.stderr


def test_schema_errors_are_one_line_each(tmp_path):
    text = edit("seeds: [2, 22]", "seedz: [2, 22]")  # a misspelled top-level key
    text = edit("  max_steps: 40", "  max_stepz: 40", text)
    text = edit("  lr: 1.0e-2 ", "  lr: fast ", text)
    text = edit("      h3k27ac: {encode: ENCFFSYB001}", "      h3k27ac: {url: 'file:///x.bigWig'}", text)  # no kind
    text = edit("  table2:\n    cells: [synthA]", "  table2:\n    cells: synthA", text)
    text = edit("  hic_normalization: NONE", "  hic_normalization: vc", text)
    cfg = write(tmp_path / "bad.yaml", text)
    # a second file sets a key the first one sets too: the error names the second
    override = write(tmp_path / "override.yaml", "training:\n  batch_size: eight\n")
    p = dry_run(tmp_path / "w", "--configfile", str(cfg), str(override))
    assert p.returncode == 1
    at = lambda needle: f"config error: {cfg}:{line_of(text, needle)}: "  # noqa: E731
    assert p.stderr.strip().splitlines() == [  # in the order of the files' lines
        at("h3k27ac: {url:") + "cell_lines.synthB.signals.h3k27ac: found a mapping with keys url, expected one of: "
                               "encode; 4dn; url + kind; encode_experiment + select + kind",
        at("hic_normalization") + "preprocess.hic_normalization: found 'vc' (a string), expected one of 'NONE', 'VC', "
                                  "'VC_SQRT', 'KR', 'SCALE'",
        at("max_stepz") + "training.max_stepz: unknown key (did you mean max_steps?)",
        at("  lr: fast") + "training.lr: found 'fast' (a string), expected a number",
        at("seedz") + "seedz: unknown key (did you mean seeds?)",
        at("cells: synthA") + "experiments.table2.cells: found 'synthA' (a string), expected one of: 'all'; a list of strings",
        f"config error: {override}:2: training.batch_size: found 'eight' (a string), expected an integer",
    ], p.stderr
    assert p.stdout.count("\n") < 10  # no schema or config dump


def test_defaults_are_filled_as_snakemake_validate_fills_them():
    from snakemake.utils import validate

    for name in ("config.yaml", "demo.yaml"):
        config = yaml.safe_load((ROOT / "config" / name).read_text())
        del config["training"]["max_steps"], config["preprocess"]  # defaults at two depths
        theirs, ours = copy.deepcopy(config), copy.deepcopy(config)
        validate(theirs, str(SCHEMA), set_default=True)
        assert schema_errors(ours, SCHEMA) == []
        assert ours == theirs and ours["training"]["max_steps"] == 50000 and ours["preprocess"]["window"] == 10000


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    text = edit("  seed: 0\n", "  seed: 0\n   bad: [1\n")
    cfg = write(tmp_path / "syntax.yaml", text)
    line = line_of(text, "bad: [1")
    p = subprocess.run([sys.executable, "-m", "prism.config", str(cfg)], env=ENV, capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.strip() == f"config error: {cfg}:{line}:7: YAML syntax error: mapping values are not allowed here"
    try:
        read_config_file(cfg)
    except ConfigError as e:
        assert str(e) == f"{cfg}:{line}:7: YAML syntax error: mapping values are not allowed here"


def test_yaml_syntax_error_in_the_snakefiles_configfile_is_one_line(tmp_path):
    """The two lines the Snakefile needs before its `configfile:` (Snakemake reads that file itself and names
    neither file, line nor column), run in front of the workflow's own Snakefile."""
    snakefile = write(tmp_path / "Snakefile", f'import sys\nsys.path.insert(0, "{ROOT / "src"}")\n'
                                              "from prism.config import exit_on_yaml_error\n"
                                              'exit_on_yaml_error("config/config.yaml")\n'
                                              f'include: "{ROOT / "Snakefile"}"\n')
    work = tmp_path / "w"
    (work / "config").mkdir(parents=True)
    write(work / "config/config.yaml", edit("chromosomes: [", "chromosomes: [[", DEMO))
    p = dry_run(work, snakefile=snakefile)
    assert p.returncode == 1
    line = line_of(DEMO, "chromosomes: [")
    assert p.stderr.strip().splitlines()[-1].startswith(f"config error: config/config.yaml:{line + 2}:1: YAML syntax "
                                                        "error: ")
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
