"""QA56's leftovers: a --models entry that reads as a run folder not made yet is said as that path (with
the command that makes it) and named as --models' entry, not as a model to `hf download`; the
playground's model facts say none for a fact the model lacks, as `tiankong info` does; and a model that
TIANKONG_MODEL named and that fails to load in the chat or compare app says the variable, as the CLI does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import cli
from test_resolve import stores, tiny  # noqa: F401 - fixtures
from test_tui_chat import run, wait_for
from test_tui_markup import plain

import tiankong.tui.app as app_module
import tiankong.tui.arena as arena_module
from tiankong.engine.errors import ModelLoadError, TokenizerError
from tiankong.engine.resolve import _TRAIN_COMMANDS, resolve_model
from tiankong.tui.app import TiankongApp
from tiankong.tui.screens.tokens import fact_text, info_table

ENV_TAG = "[TIANKONG_MODEL names this model: fix the variable, unset it, or pass --model]"


# --- 1: a --models entry that is a run folder not made yet -----------------------------------------


def test_a_name_whose_folder_is_here_is_said_as_the_missing_path(stores):  # noqa: F811 - chdir'd to a tmp
    Path("runs").mkdir()
    for name, command in (("runs/sft", "sft"), ("runs/ppo-2", "ppo"), ("runs/rm", "METHOD"), ("runs/x/dpo", "dpo")):
        with pytest.raises(ModelLoadError) as e:
            resolve_model(name)
        line = str(e.value)
        assert line.startswith(f"no model '{name}': no folder {name} here (runs/ is a folder here"), line
        assert line.endswith(f"(`tiankong train {command} --output {name}`)") and "hf download" not in line, line
    Path("runs/sft-long").mkdir()  # mistyped: the folder that is there, the rest of the path as typed
    with pytest.raises(ModelLoadError, match=r"did you mean runs/sft-long/final\? \(runs/ is a folder here"):
        resolve_model("runs/sft-lng/final")
    # No folder of it here (or runs a file, or a revision named): a hub name, with its download.
    for name, fetch in (("other/sft", "other/sft"), ("runs/sft@v1", "runs/sft --revision v1")):
        with pytest.raises(ModelLoadError, match=f"`hf download {fetch}`"):
            resolve_model(name)
    shutil.rmtree("runs")
    Path("runs").write_text("not a folder")
    with pytest.raises(ModelLoadError, match="`hf download runs/sft`"):
        resolve_model("runs/sft")


def test_the_train_commands_named_are_tiankong_trains():
    from tiankong.tui.train_cli import TRAINERS

    assert set(_TRAIN_COMMANDS) == set(TRAINERS)


def test_compare_names_the_models_entry_and_the_fix_that_fits(stores, monkeypatch, capsys):  # noqa: F811
    Path("runs").mkdir()
    code, out, err = cli(monkeypatch, capsys, "compare", "--models", "runs/sft,runs/ppo", "--data-dir", "data")
    (line,) = err.strip().splitlines()
    assert code == 2 and line.startswith("error: --models: no model 'runs/sft': no folder runs/sft here"), err
    assert "tiankong train sft --output runs/sft" in line and "hf download" not in line, line
    # TIANKONG_MODEL fills --model, never --models: an entry with the same value is --models' own.
    monkeypatch.setenv("TIANKONG_MODEL", "runs/sft")
    code, out, err = cli(monkeypatch, capsys, "compare", "--models", "runs/sft,runs/ppo", "--data-dir", "data")
    assert code == 2 and err.startswith("error: --models: no model 'runs/sft'") and "TIANKONG_MODEL" not in err, err
    monkeypatch.delenv("TIANKONG_MODEL")
    Path("runs").rmdir()  # no runs/ here: ORG/NAME of the hub it may be
    code, out, err = cli(monkeypatch, capsys, "compare", "--models", "runs/sft,runs/ppo", "--data-dir", "data")
    assert code == 2 and err.startswith("error: --models: no model 'runs/sft'") and "`hf download runs/sft`" in err


# --- 2: the model facts' none -----------------------------------------------------------------------


def test_the_playgrounds_model_facts_say_none_as_info_does():
    assert fact_text("bos_id", None) == "none"
    shown = plain(info_table({"name": "m", "bos_id": None, "eos_ids": [2]}))
    assert "none" in shown and "None" not in shown, shown


# --- 3: TIANKONG_MODEL's model failing to load in the app --------------------------------------------


def _load_error(store, tmp_path, models, env_model, mode="chat"):
    app = TiankongApp(
        models[0],
        store=store,
        export_dir=tmp_path,
        show_timing=False,
        mode=mode,
        compare_models=models if len(models) > 1 else None,
        env_model=env_model,
    )

    async def go():
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.engine_error is not None)
            return app.engine_error

    return run(go())


def test_a_load_failure_of_tiankong_models_model_in_the_app_names_the_variable(store, tmp_path):
    gone = tmp_path / "gone-model"
    error = _load_error(store, tmp_path, [gone], env_model=gone)
    assert "gone-model" in error and error.endswith(ENV_TAG), error
    assert "TIANKONG_MODEL" not in _load_error(store, tmp_path, [gone], env_model=None)
    # Compare: the model that failed is another than the variable's: its line is the plain one.
    other = tmp_path / "other-model"
    error = _load_error(store, tmp_path, [gone, other], env_model=other, mode="compare")
    assert "gone-model" in error and "TIANKONG_MODEL" not in error, error


def test_a_tokenizer_refused_before_the_app_names_the_variable(tiny, tmp_path):  # noqa: F811
    folder = shutil.copytree(tiny, tmp_path / "no-tokenizer")
    (folder / "tokenizer.json").write_text(json.dumps({"model": "not one"}), encoding="utf-8")
    with pytest.raises(TokenizerError) as plain_error:
        app_module.checked_tokenizers([folder])
    with pytest.raises(TokenizerError) as tagged:
        app_module.checked_tokenizers([folder], env_model=folder)
    assert str(tagged.value) == f"{plain_error.value} {ENV_TAG}"


@pytest.mark.parametrize(
    "args, from_env",
    [
        (["chat"], 0),
        (["compare"], 0),
        (["compare", "--models", "OTHER"], 0),  # one entry: against --model, here the variable's
        (["compare", "--models", "OTHER", "--prompts", "PROMPTS"], 0),
        (["compare", "--models", "OTHER,OTHER2"], None),  # --model does not play
        (["chat", "-m", "TINY"], None),  # typed: the command line's, whatever the variable holds
    ],
)
def test_chat_and_compare_tell_the_app_which_model_the_variable_named(
    tiny,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
    args,
    from_env,
):
    others = [shutil.copytree(tiny, tmp_path / name) for name in ("other", "other2")]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\n", encoding="utf-8")
    names = {"TINY": str(tiny), "OTHER": str(others[0]), "OTHER,OTHER2": f"{others[0]},{others[1]}"}
    names["PROMPTS"] = str(prompts)
    monkeypatch.setenv("TIANKONG_MODEL", str(tiny))
    seen = []
    monkeypatch.setattr(app_module, "run_until_exit", lambda app, mode: seen.append(app))
    monkeypatch.setattr(arena_module, "run_until_exit", lambda app, mode: seen.append(app))
    code, out, err = cli(monkeypatch, capsys, *[names.get(a, a) for a in args], "--data-dir", tmp_path / "data")
    assert code == 0 and len(seen) == 1, err
    (app,) = seen
    expected = None if from_env is None else app.model_dirs[from_env]
    assert app.env_model == expected and (expected is None or expected == tiny), (app.env_model, app.model_dirs)
