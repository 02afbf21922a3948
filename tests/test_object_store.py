"""The shared-memory object store on real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, assert_no_orphans, run_driver, wait_until

import runtime
from runtime._private import memcopy
from runtime._private.framing import frame
from runtime.protocol.rt import StoreOp, StoreReply, StoreRequest

MB = 1 << 20


def worker():
    return runtime.api._context.current()


def stats():
    return worker().store_client.stats()


@pytest.fixture
def small_store():
    ctx = runtime.init(num_cpus=2, object_store_memory=200 * MB)
    try:
        yield ctx
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


@runtime.remote
def same_memory(a, b):
    return bool(np.shares_memory(a, b)), a.flags.writeable, int(a.sum())


@runtime.remote
def array_sum(x):
    return int(x.sum())


@runtime.remote
def make_array(n, value):
    return np.full(n, value, dtype=np.int64)


def test_zero_copy_gets(cluster):
    data = np.arange(5 * MB, dtype=np.int64)
    ref = runtime.put(data)
    first, second = runtime.get(ref), runtime.get(ref)
    assert np.shares_memory(first, second)
    assert not first.flags.writeable
    assert np.array_equal(first, data)


@pytest.mark.parametrize(
    "nbytes", [memcopy.PARALLEL_MIN_BYTES + 4097, 3 * memcopy.PARALLEL_MIN_BYTES]
)
def test_a_large_copy_in_chunks_is_exact(nbytes):
    assert memcopy.threads_for(nbytes) == min(memcopy.MAX_THREADS, os.cpu_count() or 1)
    src = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8)
    dest = np.zeros(nbytes + 2, dtype=np.uint8)  # a byte either side stays untouched
    memcopy.copy(memoryview(dest)[1:-1], memoryview(src).toreadonly())
    assert np.array_equal(dest[1:-1], src) and dest[0] == 0 and dest[-1] == 0


FORK_AFTER_COPY = """
import os, numpy as np
from runtime._private import memcopy
a = np.arange(4 << 20, dtype=np.int64)
memcopy.copy(memoryview(np.empty_like(a)).cast("B"), memoryview(a).cast("B"))
pid = os.fork()
if pid == 0:  # the parent's copying threads are not here
    c = np.empty_like(a)
    memcopy.copy(memoryview(c).cast("B"), memoryview(a).cast("B"))
    os._exit(0 if (c == a).all() else 3)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_a_forked_child_copies_with_threads_of_its_own():
    done = run_driver(FORK_AFTER_COPY, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr


def test_a_copy_between_unequal_buffers_is_refused():
    with pytest.raises(ValueError, match="copy of 3 bytes into a buffer of 2"):
        memcopy.copy(memoryview(bytearray(2)), memoryview(b"abc"))


def test_a_put_of_several_large_buffers_reads_back_whole(cluster):
    rng = np.random.default_rng(1)
    value = {k: rng.random(n) for k, n in (("a", 3 * MB + 1), ("b", 5), ("c", 2 * MB + 7))}
    got = runtime.get(runtime.put(value))
    assert all(np.array_equal(got[k], value[k]) for k in value)


def test_a_large_buffer_starts_where_its_source_does_in_its_page(cluster):
    """A copy whose destination starts a little ahead of its source within a
    page runs several times slower (4K aliasing): a large buffer is placed in
    its segment at its source's place in the page, rounded down to 64 bytes."""
    base = np.arange(2 * MB + 8192, dtype=np.uint8)
    for start in (0, 16, 64, 100, 3000, 4095):
        source = base[start : start + 2 * MB]
        got = runtime.get(runtime.put(source))
        assert np.array_equal(got, source)
        assert got.ctypes.data % 4096 == source.ctypes.data % 4096 // 64 * 64
        assert got.ctypes.data % 64 == 0


def test_zero_copy_inside_a_task(cluster):
    data = np.ones(4 * MB, dtype=np.int64)
    ref = runtime.put(data)
    shared, writeable, total = runtime.get(same_memory.remote(ref, ref))
    assert shared and not writeable and total == 4 * MB


def test_large_arguments_go_through_the_store(cluster):
    data = np.ones(2 * MB, dtype=np.int64)
    before = stats().num_objects
    assert runtime.get(array_sum.remote(data)) == 2 * MB
    wait_until(lambda: stats().num_objects == before, what="the argument to be freed")


def test_large_results_are_stored_and_freed(cluster):
    ref = make_array.remote(MB, 7)
    result = runtime.get(ref)
    assert result[0] == 7 and len(result) == MB and not result.flags.writeable
    assert stats().num_objects == 1
    del ref, result
    wait_until(lambda: stats().num_objects == 0 and stats().used == 0, what="the result's freeing")


def test_memory_returns_after_freeing(cluster):
    baseline = stats().used
    refs = [runtime.put(np.zeros(MB, dtype=np.int64)) for _ in range(10)]
    assert stats().used >= baseline + 80 * MB
    del refs
    wait_until(lambda: stats().used == baseline, what="the store usage to go back")


def test_small_objects_stay_inline(cluster):
    runtime.get(runtime.put(np.zeros(100, dtype=np.int64)))
    assert stats().num_objects == 0


def test_spilling_under_pressure_reads_back_identical(small_store):
    spill_dir = os.path.join(small_store.session_dir, "spill")
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 1 << 62, size=10 * MB // 8, dtype=np.int64) for _ in range(100)]
    refs = [runtime.put(a) for a in arrays]  # 1 GB into a 200 MB store
    s = stats()
    assert s.used <= 200 * MB and s.num_spilled > 0 and s.spill_files > 0
    # Spill files have no names: nothing of them can outlive the raylet.
    assert not os.listdir(spill_dir)
    for ref, original in zip(refs, arrays, strict=True):
        assert np.array_equal(runtime.get(ref), original)
    assert stats().num_restored > 0
    del refs, ref
    wait_until(lambda: stats().num_objects == 0, what="every object to be freed")
    wait_until(lambda: stats().spill_files == 0, what="the spill files to be closed")


def test_restore_while_every_byte_is_read(small_store):
    """A spilled object read while the store is full of values in use is read
    into memory outside the store (Ray's fallback), given back when dropped; a
    value dropped by its last reader frees its memory before the next get."""
    refs = [runtime.put(np.full(10 * MB // 8, i, dtype=np.int64)) for i in range(30)]
    held = [runtime.get(refs[i]) for i in range(19)]  # 190 MB of a 200 MB store
    extra = runtime.get(refs[25])
    assert extra[0] == extra[-1] == 25
    assert stats().fallback_bytes >= 10 * MB and stats().used <= 200 * MB
    del extra
    del held[0]
    again = runtime.get(refs[26])  # fits now: nothing goes outside the store
    assert again[0] == again[-1] == 26
    assert stats().fallback_bytes == 0
    for i, value in enumerate(held, start=1):
        assert value[0] == value[-1] == i
    del held, again, value
    del refs
    wait_until(lambda: stats().num_objects == 0, what="every object to be freed")


def test_spilled_bytes_go_with_a_killed_raylet(tmp_path):
    """After SIGKILL of the raylet (or of the driver), no spill bytes stay on disk."""
    code = f"""
import os, signal, numpy as np, runtime
ctx = runtime.init(num_cpus=1, object_store_memory=100 * 1024 * 1024,
                   _system_config={{"session_root": {str(tmp_path)!r}}})
refs = [runtime.put(np.ones(10 * 1024 * 1024 // 8)) for _ in range(30)]
raylet = [int(line.split()[0]) for line in open(os.path.join(ctx.session_dir, "pids"))
          if "raylet" in line][0]
deleted = [os.readlink(f"/proc/{{raylet}}/fd/{{fd}}") for fd in os.listdir(f"/proc/{{raylet}}/fd")]
print(sum("spill" in link and "(deleted)" in link for link in deleted))
os.kill(raylet, signal.SIGKILL)
os.kill(os.getpid(), signal.SIGKILL)
"""
    out = run_driver(code)
    assert out.returncode == -9, out.stderr
    assert int(out.stdout.strip()) > 0  # spilled into unnamed files
    # Nothing named stays under the session root but logs and bookkeeping.
    left = [
        os.path.join(folder, name)
        for folder, _, names in os.walk(tmp_path)
        for name in names
        if os.path.basename(folder) == "spill"
    ]
    assert left == []


def test_restore_after_spill_inside_tasks(small_store):
    refs = [runtime.put(np.full(20 * MB // 8, i, dtype=np.int64)) for i in range(20)]
    assert stats().num_spilled > 0
    sums = runtime.get([array_sum.remote(r) for r in refs])
    assert sums == [i * (20 * MB // 8) for i in range(20)]


def test_an_object_larger_than_the_store_is_kept_on_disk(small_store):
    # Ray's fallback allocation: a file on disk, outside the store's capacity,
    # read as any object is (zero-copy, in tasks too), freed when dropped.
    ref = runtime.put(np.arange(300 * MB // 8, dtype=np.int64))
    assert stats().fallback_bytes >= 300 * MB and stats().used <= 200 * MB
    assert int(runtime.get(ref)[-1]) == 300 * MB // 8 - 1
    assert runtime.get(array_sum.remote(ref)) == sum(range(300 * MB // 8))
    big = make_array.remote(250 * MB // 8, 3)  # a task's result too
    assert runtime.get(array_sum.remote(big)) == 3 * (250 * MB // 8)
    del ref, big
    wait_until(lambda: stats().fallback_bytes == 0, timeout=30)
    assert runtime.get(runtime.put(1)) == 1


def test_a_put_while_every_byte_is_being_read_is_kept_on_disk(small_store):
    held = [runtime.get(runtime.put(np.zeros(60 * MB // 8))) for _ in range(3)]  # read: pinned
    ref = runtime.put(np.ones(60 * MB // 8))
    assert stats().fallback_bytes >= 60 * MB
    assert float(runtime.get(ref).sum()) == 60 * MB // 8
    del held, ref
    wait_until(lambda: stats().fallback_bytes == 0, timeout=30)


def test_several_workers_read_one_object(cluster):
    ref = runtime.put(np.ones(8 * MB, dtype=np.int64))
    assert runtime.get([array_sum.remote(ref) for _ in range(8)]) == [8 * MB] * 8


def _raw(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.settimeout(10)
    return sock


def _call(sock: socket.socket, request: StoreRequest) -> StoreReply:
    sock.sendall(frame(bytes(request)))
    data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 8)
    for fd in fds:
        os.close(fd)
    return StoreReply.parse(data[4:])


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_malformed_input_disconnects_only_that_client(cluster):
    path = worker().store_socket
    garbage = _raw(path)
    garbage.sendall(b"\x00\x00\x00\x05\xff\xff\xff\xff\xff")
    assert _closed_by_server(garbage)
    huge = _raw(path)
    huge.sendall(b"\x7f\xff\xff\xff")
    assert _closed_by_server(huge)
    rude = _raw(path)
    assert _call(rude, StoreRequest(op=StoreOp.CREATE, object_ids=[b"x"], size=1)).error
    # The store still serves everyone else.
    assert np.array_equal(runtime.get(runtime.put(np.arange(MB))), np.arange(MB))


def test_protocol_errors_get_error_replies(cluster):
    sock = _raw(worker().store_socket)
    assert not _call(sock, StoreRequest(op=StoreOp.HELLO, object_ids=[b"token"])).error
    oid = b"o" * 20
    assert not _call(sock, StoreRequest(op=StoreOp.CREATE, object_ids=[oid], size=100)).error
    assert not _call(sock, StoreRequest(op=StoreOp.SEAL, object_ids=[oid])).error
    assert "already sealed" in _call(sock, StoreRequest(op=StoreOp.SEAL, object_ids=[oid])).error
    assert "unknown" in _call(sock, StoreRequest(op=StoreOp.SEAL, object_ids=[b"n" * 20])).error
    # Creating a sealed object again (a retried task) is fine: it is there already.
    again = _call(sock, StoreRequest(op=StoreOp.CREATE, object_ids=[oid], size=1))
    assert again.exists and not again.error and not again.objects
    pending = b"p" * 20
    assert not _call(sock, StoreRequest(op=StoreOp.CREATE, object_ids=[pending], size=8)).error
    assert (
        "exists" in _call(sock, StoreRequest(op=StoreOp.CREATE, object_ids=[pending], size=8)).error
    )
    too_big = _call(sock, StoreRequest(op=StoreOp.CREATE, object_ids=[b"b" * 20], size=1 << 50))
    # Not even on disk: refused, saying both.
    assert too_big.store_full and "cannot fit" in too_big.error
    assert "no room on disk" in too_big.error
    reply = _call(sock, StoreRequest(op=StoreOp.GET, object_ids=[b"n" * 20]))
    assert not reply.error and not reply.objects[0].found
    sock.close()


def test_client_killed_mid_create_leaks_nothing(cluster):
    baseline = stats().used
    code = (
        "import socket, sys, time\n"
        "from runtime._private.framing import frame\n"
        "from runtime.protocol.rt import StoreOp, StoreRequest\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "s.connect(sys.argv[1])\n"
        "for op, size in ((StoreOp.HELLO, 0), (StoreOp.CREATE, 50 << 20)):\n"
        "    ids = [b'killed-token'] if op is StoreOp.HELLO else [b'k' * 20]\n"
        "    s.sendall(frame(bytes(StoreRequest(op=op, object_ids=ids, size=size))))\n"
        "    socket.recv_fds(s, 65536, 8)\n"
        "print('created', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, worker().store_socket],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "created"
        assert stats().used >= baseline + 50 * MB
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: stats().used == baseline, what="the aborted create to be freed")
    finally:
        proc.kill()
        proc.wait()
    assert runtime.get(runtime.put(np.ones(MB)))[0] == 1


@pytest.mark.parametrize("given_as", ["argument", "ray_system_config"])
def test_object_spilling_directory_is_where_spill_files_go(tmp_path, given_as) -> None:
    from conftest import runtime_pids

    with pytest.raises(TypeError, match="object_spilling_directory"):
        runtime.init(object_spilling_directory=3)  # refused before anything starts
    with pytest.raises(ValueError, match="runtime start"):
        runtime.init(address="127.0.0.1:1", object_spilling_directory=str(tmp_path / "no"))
    with pytest.raises(ValueError, match="only filesystem"):
        runtime.init(
            _system_config={"object_spilling_config": '{"type": "smart_open", "params": {}}'}
        )
    assert not (tmp_path / "no").exists()
    folder = tmp_path / "spill-here"  # made by init, as Ray's argument is
    if given_as == "argument":
        where: dict = {"object_spilling_directory": str(folder)}
    else:  # Ray's documented older form
        spilling = {"type": "filesystem", "params": {"directory_path": str(folder)}}
        where = {"_system_config": {"object_spilling_config": json.dumps(spilling)}}
    ctx = runtime.init(num_cpus=1, object_store_memory=100 * MB, **where)
    try:
        refs = [runtime.put(np.full(20 * MB // 8, i, dtype=np.int64)) for i in range(8)]
        assert stats().num_spilled > 0
        # The files have no name; the processes holding them show where they are.
        held = []
        for pid in runtime_pids(ctx.session_dir):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    held.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
                except OSError:
                    pass
        assert any(path.startswith(str(folder)) for path in held), held
        assert [int(runtime.get(r)[0]) for r in refs] == list(range(8))
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)
    assert os.listdir(folder) == []  # nothing left behind
