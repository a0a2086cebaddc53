/* libfilo: sockets on filo's named stacks (link with -lfilo). */
#ifndef LIBFILO_H
#define LIBFILO_H
#ifdef __cplusplus
extern "C" {
#endif

/* A socket created in the stack served at `path` by `filo stack serve PATH` (or in the stack
 * named by the FILO_STACK environment variable when `path` is NULL; a plain socket(2) when
 * neither is given). Returns the descriptor, or -1 with errno set: EACCES (no permission on
 * path), ENOENT (no stack there), ECONNREFUSED (its daemon is gone), EPERM (a raw, packet or
 * other privileged socket the caller could not open itself), or socket(2)'s errors. */
int msocket(const char *path, int domain, int type, int protocol);

#ifdef __cplusplus
}
#endif
#endif
