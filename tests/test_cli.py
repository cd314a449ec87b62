"""The CLI dispatcher: help lists every verb, unknown/unimplemented verbs and bad input exit non-zero cleanly."""

import subprocess
import sys

from pipeline import cli
from pipeline.errors import UserError


def test_help_lists_every_verb():
    out = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, check=True)
    for verb in ["sample", "convert", "validate", "split", "train", "evaluate", "export", "push", "demo", "jobs",
                 "experiments"]:
        assert verb in out.stdout


def test_unimplemented_verb_says_so_and_fails(monkeypatch, capsys):
    monkeypatch.setitem(cli.VERBS, "teleport", "a verb without a module")
    assert cli.main(["teleport"]) == 2
    assert "error: 'teleport' is not implemented yet" in capsys.readouterr().err


def test_user_error_becomes_one_line(monkeypatch, capsys):
    class Exploding:
        @staticmethod
        def add_arguments(parser):
            parser.add_argument("path")

        @staticmethod
        def run(args):
            raise UserError("not a SAM 2 export", args.path)

    monkeypatch.setitem(cli.VERBS, "explode", "raises a user error")
    monkeypatch.setattr(cli, "_command_module", lambda verb: Exploding if verb == "explode" else None)
    assert cli.main(["explode", "data.zip"]) == 2
    err = capsys.readouterr().err
    assert err == "error: data.zip: not a SAM 2 export\n"


def test_no_verb_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "VERB" in capsys.readouterr().out
