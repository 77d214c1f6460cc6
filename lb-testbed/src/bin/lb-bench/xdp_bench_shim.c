// LD_PRELOAD shim that lets Debian's xdp-bench and xdp-trafficgen 1.3.1
// run on kernels without the xdp_redirect_map tracepoints (Linux 6.16
// removed them; xdp-tools 1.5.6 stopped loading them). Both link the
// shared libbpf.so.1 and the libxdp inside them calls it through the PLT,
// so these definitions take the place of libbpf's:
//
// - bpf_object__load: programs whose section names a removed tracepoint
//   are not loaded (their statistics are redirect modes' only);
// - bpf_program__attach / bpf_link__destroy: such a program attaches to a
//   placeholder link, destroyed as a no-op;
// - bpf_prog_test_run_opts: xdp-trafficgen probes live-frames mode with a
//   4-byte packet, which the kernel refuses (EINVAL: less than an
//   Ethernet header), and then reports "Kernel doesn't support live packet
//   mode"; the probe is padded to 14 bytes, its context's data_end with it.
//
// Built by `cargo xtask bench` with cc; used only by the bench.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct bpf_object;
struct bpf_program;
struct bpf_link;

// libbpf's struct bpf_test_run_opts (a sized, append-only ABI).
struct bpf_test_run_opts {
    size_t sz;
    const void *data_in;
    void *data_out;
    uint32_t data_size_in;
    uint32_t data_size_out;
    const void *ctx_in;
    void *ctx_out;
    uint32_t ctx_size_in;
    uint32_t ctx_size_out;
    uint32_t retval;
    int repeat;
    uint32_t duration;
    uint32_t flags;
    uint32_t cpu;
    uint32_t batch_size;
};

#define REMOVED_TRACEPOINTS "xdp_redirect_map"
#define ETH_HLEN 14
#define BPF_F_TEST_XDP_LIVE_FRAMES (1U << 1)
// struct xdp_md: data, data_end, data_meta, ingress_ifindex,
// rx_queue_index, egress_ifindex.
#define XDP_MD_WORDS 6
#define XDP_MD_DATA_END 1

static char placeholder_link;

static void *libbpf(const char *name) { return dlsym(RTLD_NEXT, name); }

static bool removed(const struct bpf_program *prog) {
    const char *(*section_name)(const struct bpf_program *) =
        libbpf("bpf_program__section_name");
    const char *section = section_name ? section_name(prog) : NULL;
    return section && strstr(section, REMOVED_TRACEPOINTS);
}

int bpf_object__load(struct bpf_object *obj) {
    int (*real)(struct bpf_object *) = libbpf("bpf_object__load");
    struct bpf_program *(*next)(const struct bpf_object *, struct bpf_program *) =
        libbpf("bpf_object__next_program");
    int (*set_autoload)(struct bpf_program *, bool) = libbpf("bpf_program__set_autoload");
    if (next && set_autoload)
        for (struct bpf_program *p = next(obj, NULL); p; p = next(obj, p))
            if (removed(p))
                set_autoload(p, false);
    return real(obj);
}

struct bpf_link *bpf_program__attach(const struct bpf_program *prog) {
    struct bpf_link *(*real)(const struct bpf_program *) = libbpf("bpf_program__attach");
    if (removed(prog))
        return (struct bpf_link *)&placeholder_link;
    return real(prog);
}

int bpf_link__destroy(struct bpf_link *link) {
    int (*real)(struct bpf_link *) = libbpf("bpf_link__destroy");
    if (link == (struct bpf_link *)&placeholder_link)
        return 0;
    return real(link);
}

int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts) {
    int (*real)(int, struct bpf_test_run_opts *) = libbpf("bpf_prog_test_run_opts");
    if (!opts || !(opts->flags & BPF_F_TEST_XDP_LIVE_FRAMES) || !opts->data_in ||
        opts->data_size_in >= ETH_HLEN)
        return real(prog_fd, opts);
    unsigned char padded[ETH_HLEN] = {0};
    uint32_t ctx[XDP_MD_WORDS] = {0};
    struct bpf_test_run_opts copy = *opts;
    memcpy(padded, opts->data_in, opts->data_size_in);
    copy.data_in = padded;
    copy.data_size_in = ETH_HLEN;
    if (opts->ctx_in && opts->ctx_size_in >= 2 * sizeof(uint32_t) &&
        opts->ctx_size_in <= sizeof(ctx)) {
        memcpy(ctx, opts->ctx_in, opts->ctx_size_in);
        ctx[XDP_MD_DATA_END] = ETH_HLEN;
        copy.ctx_in = ctx;
    }
    int ret = real(prog_fd, &copy);
    opts->retval = copy.retval;
    opts->duration = copy.duration;
    return ret;
}
