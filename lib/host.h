/*
 * host.h - who this process is, in a form other imgsyncd processes on the
 * same machine can check.
 *
 * A daemon killed with SIGKILL leaves its leases behind until they expire.
 * When its successor starts on the same host (systemd's Restart=), it can
 * tell for certain that the old process is gone and release them at once.
 * "For certain" needs more than a pid: the identity is the boot id, the pid
 * namespace and the process start time, so a reused pid, another container
 * with the same host name or a reboot never makes a live daemon look dead.
 */
#ifndef IMGSYNC_HOST_H
#define IMGSYNC_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define HOST_IDENT_MAX 128

/* This process's identity ("BOOTID/PIDNS/STARTTIME"); "" if /proc is not
 * readable (then no successor can ever decide for us). */
void host_ident(char *out, size_t size);

/* True only when the process pid, recorded with identity ident, has
 * certainly ended: same boot and pid namespace as ours, and no process
 * with that pid and start time exists.  False when in doubt. */
bool host_process_gone(const char *ident, pid_t pid);

#endif
