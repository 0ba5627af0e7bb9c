"""A failure in the field is explained from a log: `-v`, `-vv` and `--log-file`."""
from conftest import run_cli


def test_a_log_file_traces_every_step_and_injected_system_call(cc, programs, workdir):
    prog = programs(cc("counter"))
    log = workdir / "ckpt.log"
    out = run_cli("--log-file", log, "dump", prog.pid, workdir / "image", "--kill")
    prog.reap()
    assert out.stderr == "", "the log goes to the file only"
    text = log.read_text()
    assert "jupyter_ckpt.engine.inject DEBUG: tid" in text and "brk(0) = 0x" in text, text[:2000]
    assert "jupyter_ckpt.engine.dumper DEBUG: phase dump.after-freeze" in text, text[:2000]

    restored = run_cli("-vv", "restore", workdir / "image", "--detach")
    assert "jupyter_ckpt.engine.inject DEBUG: tid" in restored.stderr
    assert restored.stdout.strip().splitlines()[-1] == str(prog.pid)
    prog.verify()


def test_without_verbosity_an_error_stays_one_line(workdir):
    out = run_cli("restore", workdir / "no-such-image", check=False)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
