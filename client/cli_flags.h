/* client/cli_flags.h: argp flag handling shared by the `baton` commands, so a flag that several
 * commands take is parsed and validated in one place.
 *
 * Each command keeps its own argp_option table (the help texts name that command's defaults)
 * but gives the shared flags the CLI_KEY_* keys below and embeds a struct cli_flags in its
 * argp input. Its parser handles its own keys first (so a letter may mean something else in a
 * command that does not take the shared flag: load's -c, cluster's -C and -p) and passes every
 * other key to cli_flags_parse, which fills the struct and stops argp with a message naming the
 * flag on a bad value. Plain functions, no state. */
#ifndef BT_CLIENT_CLI_FLAGS_H
#define BT_CLIENT_CLI_FLAGS_H
#include "common/err.h"
#include "engine/sampler.h"

#include <argp.h>
#include <stdint.h>

/* Argp keys of the shared flags. Printable keys are also the short option; the rest are
 * long-only and start above the range the commands use for their own keys (1000..). */
enum cli_key {
    CLI_KEY_MODEL = 'm',   /* --model FILE (local commands) */
    CLI_KEY_THREADS = 'j', /* --threads N */
    CLI_KEY_CHUNK = 'c',   /* --chunk N (prefill chunk) */
    CLI_KEY_LAYERS = 'l',  /* --layers LO:HI,.. */
    CLI_KEY_N = 'n',       /* -n N: tokens to generate */
    CLI_KEY_TEMP = 'T',    /* --temp T */
    CLI_KEY_GREEDY = 'g',  /* --greedy */
    CLI_KEY_URL = 'u',     /* --url URL (server commands) */
    CLI_KEY_PROMPT = 'p',  /* --prompt TEXT */
    CLI_KEY_CHAT = 'C',    /* --chat */
    CLI_KEY_TOP_K = 0x1000,
    CLI_KEY_TOP_P,
    CLI_KEY_MIN_P,
    CLI_KEY_REPEAT_PENALTY,
    CLI_KEY_SEED,         /* sampling seed */
    CLI_KEY_SERVER_MODEL, /* --model NAME (server commands: the model id to request) */
    CLI_KEY_TIMEOUT,      /* --timeout SECS */
    CLI_KEY_THINK,        /* --think */
    CLI_KEY_NO_THINK,     /* --no-think */
    CLI_KEY_SYSTEM,       /* --system TEXT */
};

/* Whole-string number parsers; BT_EINVAL naming the flag and the accepted range. */
int cli_parse_int(const char *flag, const char *s, int min, int max, int *out, bt_err *e);
int cli_parse_u64(const char *flag, const char *s, uint64_t *out, bt_err *e);
int cli_parse_float(const char *flag, const char *s, float min, float *out, bt_err *e);

/* Sampling: -n, --temp, --greedy, --top-k, --top-p, --min-p, --repeat-penalty, --seed. The
 * command sets its defaults (sampler_params_default, then its own) and n_min before parsing.
 * Ranges of the sampler's own fields are left to sampler_new, except a temperature < 0. */
struct cli_sampling {
    int n;          /* -n: tokens to generate, in [n_min, CLI_MAX_GEN] */
    int n_min;      /* 0 or 1 */
    int greedy;     /* --greedy given */
    int temp_given; /* --temp given (servers otherwise use their own default) */
    struct sampler_params sp;
};
#define CLI_MAX_GEN (1 << 20)

/* The temperature to use: 0 with --greedy, else sp.temperature. */
float cli_sampling_temp(const struct cli_sampling *s);

/* Local model: --model, --threads, --chunk, --layers. */
struct cli_local {
    const char *model, *layers; /* layers NULL = the whole model in one stage */
    int threads;                /* 0 = all CPUs */
    int chunk;                  /* prefill chunk; the command's default (64) preset */
};

/* Server: --url, --model (id to request), --timeout. */
struct cli_server {
    const char *url, *model; /* model NULL = ask the server (oai_target_resolve) */
    int timeout_s;           /* preset to the command's default */
};

/* The prompt: --prompt, --chat, --think / --no-think, --system. */
struct cli_prompt {
    const char *prompt, *system;
    int chat, think;
};

struct cli_flags {
    struct cli_local l;
    struct cli_sampling s;
    struct cli_server v;
    struct cli_prompt p;
};
/* Fills f from a shared key; ARGP_ERR_UNKNOWN for any other key. */
error_t cli_flags_parse(struct cli_flags *f, int key, const char *arg, struct argp_state *st);

#endif
