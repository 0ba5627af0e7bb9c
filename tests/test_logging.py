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


def test_verbose_names_the_phases_of_a_dump_and_a_restore(cc, programs, workdir):
    """-v shows the named phases (resources/kind.py, restorer._PROCESS_PHASES), not every
    injected system call."""
    prog = programs(cc("counter"))
    dumped = run_cli("-v", "dump", prog.pid, workdir / "image", "--kill")
    prog.reap()
    for phase in ("phase index", f"pid {prog.pid}: phase dump_process", "phase check", "phase dump_section"):
        assert phase in dumped.stderr, dumped.stderr
    restored = run_cli("-v", "restore", workdir / "image", "--detach")
    for phase in ("phase verify", "phase seed", f"pid {prog.pid}: mapping its memory and writing its pages",
                  f"pid {prog.pid}: creating its threads", "phase finish", "phase release"):
        assert phase in restored.stderr, restored.stderr
    assert "brk(0) = 0x" not in restored.stderr, "-v is not -vv"
    prog.verify()
