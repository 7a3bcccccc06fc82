"""environment.yml (conda) and pyproject.toml (pip) must name the same packages with the same bounds.

Offline: this compares names and version specifiers as written; it cannot resolve either environment.
"""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge's name for the same package
NOT_PACKAGES = {"python", "pip"}     # the interpreter and installer, compared separately


def _split(spec: str) -> tuple[str, frozenset[str]]:
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", spec)
    assert match, f"cannot read requirement {spec!r}"
    name, bounds = match.groups()
    name = name.lower().replace("_", "-")
    return name, frozenset(b.replace(" ", "") for b in bounds.split(",") if b.strip())


def pyproject_requirements(root: Path = ROOT) -> dict[str, frozenset[str]]:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    return dict(_split(s) for s in specs)


def conda_requirements(root: Path = ROOT) -> tuple[dict[str, frozenset[str]], list[str]]:
    """The conda dependency list and the pip section of environment.yml (a small fixed format)."""
    conda, pip, section = {}, [], None
    for line in (root / "environment.yml").read_text().splitlines():
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped:
            continue
        if not stripped.startswith(" "):
            section = stripped.rstrip(":")
            continue
        item = stripped.strip()
        if section != "dependencies" or not item.startswith("- "):
            continue
        item = item[2:].strip()
        if item == "pip:":
            continue
        if line.startswith("      - "):  # the nested pip: list
            pip.append(item)
            continue
        name, bounds = _split(item)
        conda[CONDA_TO_PIP.get(name, name)] = bounds
    return conda, pip


def disagreements(root: Path = ROOT) -> list[str]:
    pip_side = pyproject_requirements(root)
    conda_side, _ = conda_requirements(root)
    conda_packages = {k: v for k, v in conda_side.items() if k not in NOT_PACKAGES}
    problems = [f"only in environment.yml: {n}" for n in sorted(set(conda_packages) - set(pip_side))]
    problems += [f"only in pyproject.toml: {n}" for n in sorted(set(pip_side) - set(conda_packages))]
    problems += [f"{n}: pyproject {sorted(b)} vs environment.yml {sorted(conda_packages[n])}"
                 for n, b in sorted(pip_side.items()) if n in conda_packages and conda_packages[n] != b]
    return problems


def test_same_packages_and_bounds():
    assert disagreements() == []


def test_a_disagreement_is_caught(tmp_path):
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    env = (ROOT / "environment.yml").read_text()
    assert "  - pytorch>=2.2,<2.15\n" in env
    (tmp_path / "environment.yml").write_text(env.replace("  - pytorch>=2.2,<2.15\n", "  - pytorch>=2.2,<2.14\n")
                                              .replace("  - tqdm>=4.66\n", ""))
    assert disagreements(tmp_path) == ["only in pyproject.toml: tqdm",
                                       "torch: pyproject ['<2.15', '>=2.2'] vs environment.yml ['<2.14', '>=2.2']"]


def test_python_versions_agree():
    conda_side, _ = conda_requirements()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert conda_side["python"] == frozenset({requires.replace(" ", "")})


def test_conda_env_installs_the_project_itself():
    _, pip = conda_requirements()
    assert "-e ." in pip, "environment.yml must install the project (pip: -e .) so `p2p` and p2p_lib exist"


def test_torch_range_admits_the_ci_build_and_no_torchvision():
    pip_side = pyproject_requirements()
    assert "torchvision" not in pip_side
    bounds = pip_side["torch"]
    from packaging.specifiers import SpecifierSet
    assert "2.13.0" in SpecifierSet(",".join(bounds)), f"torch bounds {sorted(bounds)} must include 2.13"


def test_a_hanging_test_fails_at_its_time_limit_instead_of_stalling_the_suite(tmp_path):
    import subprocess
    import sys
    config = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert 0 < config["tool"]["pytest"]["ini_options"]["timeout"] <= 600
    (tmp_path / "test_hangs.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(60)\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "1",
                           str(tmp_path / "test_hangs.py")], capture_output=True, text=True, timeout=50,
                          cwd=tmp_path)
    assert done.returncode == 1 and "Timeout" in done.stdout
