"""CRIU dump and restore options for a workload that runs inside a container.

The choices, and why:
- tcp_established on dump, tcp_close on restore: a pod comes back with a new IP, so open
  connections cannot survive; they are dumped (else CRIU refuses) and restored closed, and clients
  reconnect. Listening sockets are restored as they were. With no connection restored, no network
  lock is needed either (network_lock=SKIP), so neither iptables nor nftables is required.
- External bind mounts that every container runtime sets up (/dev/null and friends, zoneinfo):
  marked external so a restore binds them to the new container's copies.
- Cgroups are ignored: the new pod has its own, set by the kubelet.
- leave_stopped: after a dump the tree stays frozen until the commit is safe, so a failed
  upload can let it run on (SIGCONT) and shut down normally. Its TCP sockets stay in repair
  mode then, until crikpy.criu.repair switches them back.
- link_remap: a file still open under a name it was unlinked from, while another hard link to
  it lives (Python's forkserver does this), is dumped as a link CRIU makes and removes again.
- unprivileged, when crikpy lacks CAP_SYS_ADMIN: CRIU's non-root mode, which works with
  CAP_CHECKPOINT_RESTORE alone (manifests/components/crikpy). It does not carry
  CLOCK_MONOTONIC/BOOTTIME over a restore (no time namespace is restored).
"""

from __future__ import annotations

from crikpy.criu.preflight import has_sys_admin
from crikpy.criu.session import rpc

LOG_LEVEL = 4  # CRIU's most verbose; the logs travel with the checkpoint and explain failures
# Descriptors CRIU's restore needs beside the workload's own (its images, logs, service fds),
# measured with 1024: a Python process with 980 shared mappings restored, 1000 did not.
RESTORE_FD_RESERVE = 32

# (path inside the container, name in the image): runtime-provided bind mounts.
EXTERNAL_MOUNTS = (
    ("/dev/null", "null"),
    ("/dev/zero", "zero"),
    ("/dev/full", "full"),
    ("/dev/random", "random"),
    ("/dev/urandom", "urandom"),
    ("/dev/tty", "tty"),
    ("/usr/share/zoneinfo", "zoneinfo"),
)


def _common(images_dir_fd: int, log_file: str):
    pb = rpc()
    opts = pb.criu_opts(
        images_dir_fd=images_dir_fd,
        log_file=log_file,
        log_level=LOG_LEVEL,
        tcp_established=True,
        file_locks=True,
        orphan_pts_master=True,
        manage_cgroups_mode=pb.IGNORE,
        shell_job=False,
        notify_scripts=True,
    )
    if not has_sys_admin():
        opts.unprivileged = True
    return pb, opts


def dump(pid: int, images_dir_fd: int, *, leave_running: bool = False,
         log_file: str = "dump.log", page_server_fd: int | None = None,
         ghost_limit: int = 512 * 1024 * 1024):
    """A final dump leaves the tree frozen (stopped); a periodic one lets it run on.
    Deleted-but-open files up to `ghost_limit` bytes are dumped whole, into the images dir.

    With `page_server_fd`, pages go over that socket (crikpy.criu.pageserver), not to disk.
    """
    pb, opts = _common(images_dir_fd, log_file)
    opts.pid = pid
    if page_server_fd is not None:
        opts.ps.fd = page_server_fd
    if leave_running:
        opts.leave_running = True
    else:
        opts.leave_stopped = True
    opts.ghost_limit = ghost_limit
    opts.link_remap = True
    opts.network_lock = pb.SKIP
    opts.external.extend(f"mnt[{path}]:{name}" for path, name in EXTERNAL_MOUNTS)
    return pb.criu_req(type=pb.DUMP, opts=opts)


def restore(images_dir_fd: int, inherit: dict[str, int], *, log_file: str = "restore.log"):
    """`inherit` maps a resource as the images name it (`pipe:[123]`) to an fd CRIU holds."""
    pb, opts = _common(images_dir_fd, log_file)
    opts.rst_sibling = True
    opts.tcp_close = True
    opts.evasive_devices = True
    opts.network_lock = pb.SKIP
    opts.external.extend(f"mnt[{name}]:{path}" for path, name in EXTERNAL_MOUNTS)
    for key, fd in inherit.items():
        opts.inherit_fd.add(key=key, fd=fd)
    return pb.criu_req(type=pb.RESTORE, opts=opts)
