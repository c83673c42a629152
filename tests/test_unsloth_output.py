"""`plan --runtime unsloth --output FILE`: the script written as TRL's outputs are (planner.report.files:
atomic, checked before planning, never for a plan rated an error)."""


LLAMA8 = "meta-llama/Llama-3.1-8B-Instruct"


def test_plan_output_writes_the_script_atomically(tmp_path, capsys):
    """`plan --runtime unsloth --output train.py`: the script, written only for a plan that passes; an existing
    file needs --force."""
    import ast

    from planner.cli import main
    target = tmp_path / "train.py"
    args = ["--runtime", "unsloth", "--model", LLAMA8, "--gpu", "T4", "--lora-rank", "32",
            "--max-seq-length", "1024", "--output", str(target)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(f"wrote {target}")
    script = target.read_text()
    ast.parse(script)
    assert "FastLanguageModel.from_pretrained(" in script and "trainer.train()" in script
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == f"plan: error: {target} exists: pass --force (force=True) to replace it"
    assert main([*args, "--force"]) == 0
    assert main(["--runtime", "unsloth", "--model", LLAMA8, "--gpu", "T4", "--plot", str(tmp_path / "m.png")]) == 2
    assert capsys.readouterr().err.strip() == ("plan: error: --plot is not written for --runtime unsloth (--output "
                                               "writes the Python script to run)")


def test_plan_output_json_names_the_file(tmp_path, capsys):
    import json

    from planner.cli import main
    target = tmp_path / "train.py"
    assert main(["--runtime", "unsloth", "--model", LLAMA8, "--gpu", "T4", "--output", str(target), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["written"] == {"train.py": str(target)} and d["next_steps"]["command"] == f"python {target}"


def test_a_plan_rated_an_error_is_not_written(tmp_path, capsys, monkeypatch):
    """Standby with an installed TRL older than 0.23 is an error-level check: exit 1, nothing written."""
    from planner.cli import main
    monkeypatch.setattr("planner.specs.versions.installed_version", {"trl": "0.22.2"}.get)
    target = tmp_path / "train.py"
    rc = main(["--runtime", "unsloth", "--model", LLAMA8, "--gpu", "L4", "--standby", "--unsloth-version", "2025.11.3",
               "--output", str(target)])
    err = capsys.readouterr().err
    assert rc == 1 and not target.exists() and "no file written" in err
