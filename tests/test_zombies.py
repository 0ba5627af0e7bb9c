"""A child that has ended but is not reaped yet (a zombie) is part of its parent's state: it
comes back as a zombie with its PID and exit status, for the parent to reap."""
from conftest import run_cli


def test_zombie_children_come_back_for_their_parent_to_reap(cc, programs, workdir):
    prog = programs(cc("zombie_child"))
    prog.dump(workdir / "image")
    result = run_cli("restore", workdir / "image", "--detach", check=False)
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert int(result.stdout.split()[-1]) == prog.pid
    prog.verify()
