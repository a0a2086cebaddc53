/* A small libvdeplug client for filo's tests and benchmarks (links Debian's libvdeplug).
 *
 *   vdeclient VNL send COUNT SIZE [DSTMAC_LAST_BYTE]  send COUNT frames as fast as possible;
 *                                                      print "CPU_SECONDS PREEMPTED" (CPU used,
 *                                                      involuntary context switches)
 *   vdeclient VNL send COUNT SIZE DST SRC               ... from 02:00:00:00:00:SRC (hex bytes)
 *   vdeclient VNL recv IDLE_MS [SRC]                   count frames; print "FRAMES SECONDS
 *                                                      CPU_SECONDS FIRST LAST" (first to last
 *                                                      frame; FIRST, LAST on CLOCK_MONOTONIC);
 *                                                      with SRC, first announce 02:..:SRC
 *   vdeclient VNL echo                                 send every frame back (swap MACs)
 *   vdeclient VNL ping COUNT SIZE                      round trips against an echo; print
 *                                                      "p50_us p99_us replies"
 *   vdeclient VNL hello SIZE                           send one frame, wait for one, print it
 * Frames come from 02:00:00:00:00:<pid&0xff> to 02:00:00:00:00:<DST> (default ff = broadcast).
 */
#include <libvdeplug.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU time (user + system) this process has used, in seconds. */
static double cpu_s(void) {
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Times this process was preempted (involuntary context switches). */
static long preempted(void) {
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_nivcsw;
}

static int cmp_double(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static void fill(unsigned char *f, int size, unsigned char dst, unsigned char src) {
	memset(f, 0, size);
	unsigned char d[6] = {2, 0, 0, 0, 0, dst};
	if (dst == 0xff) memset(d, 0xff, 6);
	memcpy(f, d, 6);
	unsigned char s[6] = {2, 0, 0, 0, 0, src};
	memcpy(f + 6, s, 6);
	f[12] = 0x88; f[13] = 0xb5;
}

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: vdeclient VNL send|recv|echo|ping|hello ARGS...\n");
		return 2;
	}
	VDECONN *conn = vde_open(argv[1], "vdeclient:", NULL);
	if (conn == NULL) { perror("vde_open"); return 1; }
	unsigned char buf[9234];
	unsigned char me = (unsigned char)(getpid() & 0x7f);
	const char *mode = argv[2];
	if (strcmp(mode, "send") == 0 && argc >= 5) {
		long count = atol(argv[3]);
		int size = atoi(argv[4]);
		unsigned char dst = argc >= 6 ? (unsigned char)strtol(argv[5], NULL, 16) : 0xff;
		if (argc >= 7) me = (unsigned char)strtol(argv[6], NULL, 16);
		fill(buf, size, dst, me);
		for (long i = 0; i < count; i++) {
			memcpy(buf + 14, &i, sizeof i);
			if (vde_send(conn, buf, size, 0) < 0) { perror("vde_send"); break; }
		}
		printf("%.6f %ld\n", cpu_s(), preempted());
		fflush(stdout);
		sleep(1);
	} else if (strcmp(mode, "recv") == 0 && argc >= 4) {
		int idle = atoi(argv[3]);
		long frames = 0;
		unsigned char want[6] = {2, 0, 0, 0, 0, 0};
		int filter = argc >= 5;
		if (argc >= 5) want[5] = (unsigned char)strtol(argv[4], NULL, 16);
		if (argc >= 5) {
			/* Announce our address so the switch learns it: traffic to us is then unicast. */
			fill(buf, 60, 0xff, (unsigned char)strtol(argv[4], NULL, 16));
			buf[12] = 0x88; buf[13] = 0xb6;
			vde_send(conn, buf, 60, 0);
		}
		double first = 0, last = 0;
		struct pollfd p = {vde_datafd(conn), POLLIN, 0};
		printf("ready\n");
		fflush(stdout);
		for (;;) {
			int r = poll(&p, 1, frames ? idle : 30000);
			if (r <= 0) break;
			ssize_t n = vde_recv(conn, buf, sizeof buf, 0);
			/* Count test frames addressed to us (flooded copies for others do not count). */
			if (n >= 14 && buf[13] == 0xb5 && (!filter || memcmp(buf, want, 6) == 0)) {
				last = now_s();
				if (frames++ == 0) first = last;
			}
		}
		printf("%ld %.6f %.6f %.6f %.6f\n", frames, last - first, cpu_s(), first, last);
	} else if (strcmp(mode, "echo") == 0) {
		struct pollfd p = {vde_datafd(conn), POLLIN, 0};
		for (;;) {
			if (poll(&p, 1, -1) <= 0) break;
			ssize_t n = vde_recv(conn, buf, sizeof buf, 0);
			if (n < 14) continue;
			unsigned char tmp[6];
			memcpy(tmp, buf, 6); memcpy(buf, buf + 6, 6); memcpy(buf + 6, tmp, 6);
			if (tmp[0] & 1) { unsigned char s[6] = {2, 0, 0, 0, 0, me}; memcpy(buf + 6, s, 6); }
			vde_send(conn, buf, n, 0);
		}
	} else if (strcmp(mode, "ping") == 0 && argc >= 5) {
		long count = atol(argv[3]);
		int size = atoi(argv[4]);
		double *rtt = calloc(count, sizeof *rtt);
		long got = 0;
		struct pollfd p = {vde_datafd(conn), POLLIN, 0};
		unsigned char dst = 0xff;
		for (long i = 0; i < count; i++) {
			fill(buf, size, dst, me);
			memcpy(buf + 14, &i, sizeof i);
			double t0 = now_s();
			vde_send(conn, buf, size, 0);
			while (poll(&p, 1, 1000) > 0) {
				unsigned char in[9234];
				ssize_t n = vde_recv(conn, in, sizeof in, 0);
				long seq;
				if (n < 22) continue;
				memcpy(&seq, in + 14, sizeof seq);
				if (seq != i) continue;
				rtt[got++] = (now_s() - t0) * 1e6;
				dst = in[11];
				break;
			}
		}
		if (got == 0) { printf("0 0 0\n"); return 1; }
		qsort(rtt, got, sizeof *rtt, cmp_double);
		printf("%.1f %.1f %ld\n", rtt[got / 2], rtt[(long)(got * 0.99)], got);
	} else if (strcmp(mode, "hello") == 0 && argc >= 4) {
		int size = atoi(argv[3]);
		fill(buf, size, 0xff, me);
		vde_send(conn, buf, size, 0);
		struct pollfd p = {vde_datafd(conn), POLLIN, 0};
		if (poll(&p, 1, 5000) > 0) {
			ssize_t n = vde_recv(conn, buf, sizeof buf, 0);
			printf("%zd\n", n);
		} else {
			printf("timeout\n");
			return 1;
		}
	} else {
		fprintf(stderr, "vdeclient: bad arguments\n");
		return 2;
	}
	vde_close(conn);
	return 0;
}
