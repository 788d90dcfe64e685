import subprocess
import sys

import pytest

from ldm.cli import COMMANDS, build_parser, main


def run_ldm(*args):
    return subprocess.run([sys.executable, "-m", "ldm", *args], capture_output=True, text=True)


def test_help_lists_every_shipped_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    shipped = build_parser()._subparsers._group_actions[0].choices
    assert set(shipped) == set(COMMANDS)
    out = capsys.readouterr().out
    for name in shipped:
        assert name in out
        with pytest.raises(SystemExit) as sub_exit:
            main([name, "--help"])
        assert sub_exit.value.code == 0


def test_user_mistake_is_one_line_and_exit_2(tmp_path):
    result = run_ldm("train", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"ldm train: error: config file not found: {tmp_path / 'missing.yaml'}"
    assert "Traceback" not in result.stderr


def test_unknown_stage_and_misspelled_key(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("stage: painting\nrun_dir: r\n")
    result = run_ldm("train", str(config))
    assert result.returncode == 2 and "unknown stage 'painting'" in result.stderr
    config.write_text("stage: autoencoder\nrun_dir: r\ndata: {source: d, resolutoin: 32}\n")
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(config)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "unknown config key 'data.resolutoin'; did you mean 'resolution'?" in err
    assert len(err.strip().splitlines()) == 1


def test_data_shapes_command_writes_dataset(tmp_path, capsys):
    main(["data", "shapes", str(tmp_path / "s"), "--n", "12", "--size", "16", "--seed", "1"])
    assert len(list((tmp_path / "s" / "train").glob("*.png"))) == 12
    with pytest.raises(SystemExit) as exit_:
        main(["data", "shapes", str(tmp_path / "t"), "--n", "0"])
    assert exit_.value.code == 2 and "argument --n: must be at least 1, got 0" in capsys.readouterr().err
