/* mconnect PATH|- ADDR PORT: a TCP connection from the named stack at PATH (or $FILO_STACK
 * for "-") through libfilo's msocket(); prints the local address used and what the server
 * sent. Exit 13 when msocket fails with EACCES, 1 on other msocket errors, 2 on connect
 * errors. */
#include <arpa/inet.h>
#include <errno.h>
#include <libfilo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: mconnect PATH|- ADDR PORT\n");
        return 64;
    }
    const char *path = strcmp(argv[1], "-") ? argv[1] : NULL;
    int fd = msocket(path, AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        int e = errno;
        printf("msocket: %s\n", strerror(e));
        return e == EACCES ? 13 : 1;
    }
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", argv[2]);
        return 64;
    }
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        printf("connect: %s\n", strerror(errno));
        return 2;
    }
    struct sockaddr_in l;
    socklen_t ll = sizeof l;
    getsockname(fd, (struct sockaddr *)&l, &ll);
    char buf[256];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0)
        n = 0;
    buf[n] = 0;
    printf("local %s\n%s", inet_ntoa(l.sin_addr), buf);
    close(fd);
    return 0;
}
