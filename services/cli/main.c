/* ursa: the command line of ursa. One subcommand per verb; each parses its
 * own settings (see --help), so `ursa up --help` lists what `up` reads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "image.h"
#include "log.h"
#include "stack.h"
#include "status_cmd.h"
#include "blas.h"
#include "nn.h"
#include "dataset_cmd.h"
#include "gc_cmd.h"
#include "classify_cmd.h"
#include "demo_cmd.h"
#include "clean_cmd.h"
#include "model_cmd.h"
#include "registry_cmd.h"
#include "service.h"
#include "train_cmd.h"
#include "topics_cmd.h"
#include "verify_cmd.h"
#include "statedir.h"

/* A command gets its settings and its positional arguments. */
typedef int (*cmd_fn)(const cfg *c, int argc, char **argv);

typedef struct {
    const char *name;
    cmd_fn fn;
    const char *usage;
    const cfg_def *defs; /* the command's own settings, or NULL */
    int takes_args;      /* positional arguments allowed */
    int nn;              /* runs the NN engine: pick OpenBLAS's kernel first */
} command;

static const command commands[] = {
    {"demo", demo_cmd,
     "usage: ursa demo [--out DIR] [--full | --quick] [--n N] [--noise P] [--seeds N]\n"
     "fast.ai's lesson 2 end to end on this machine: Fashion-MNIST served as JPEG files\n"
     "by a local web server, with the web's mess planted (wrong labels, most between\n"
     "classes that look alike; images of no class; 404s, a slow host, HTML sent as\n"
     "image/jpeg, truncated files, exact and near-duplicates); then ursa up, ingest,\n"
     "lr-find, train, interp, audit, clean --accept-suggestions, the retrain on the\n"
     "cleaned data, and the model served over HTTP, each shown as the command a user\n"
     "would type. It ends with a summary (images verified and rejected by reason, what\n"
     "the audit found against what was planted, what the cleaning did, test accuracy\n"
     "before and after cleaning, the time of each stage), written to DIR/summary.md\n"
     "beside the model (DIR/model.onnx) and the plots. --seeds N also trains N times on\n"
     "the noisy, the cleaned, a reviewer's and the true labels (mean and standard\n"
     "deviation, and the share of the noise's cost that cleaning recovered). Needs a\n"
     "built tree (it runs the fault-server and idx2jpeg beside this binary) and\n"
     "dataset-fashion-mnist.\n\n",
     demo_defs, 0, 0},
    {"up", stack_up,
     "usage: ursa up [--state-dir DIR]\n"
     "Starts the embedded stack in the background (a private redis-server, ursa-broker,\n"
     "then every daemon that is built) and returns once every daemon has sent its first\n"
     "heartbeat. On a running stack it changes nothing; parts that died are started\n"
     "again. The daemons get free metrics ports (run/<daemon>.metrics-port); the\n"
     "inference server and the console move off a default port another process holds.\n"
     "When a daemon cannot start, up stops what it started and exits 1 with the reason.\n\n",
     stack_up_defs, 0, 0},
    {"down", stack_down,
     "usage: ursa down [--state-dir DIR]\n"
     "Stops the stack cleanly: daemons, then the broker, then Redis (SIGTERM, then\n"
     "SIGKILL after stack.timeout-ms). Names the training jobs not over: the trainers\n"
     "send them again once the stack is up.\n\n", NULL, 0, 0},
    {"status", status_cmd,
     "usage: ursa status [--state-dir DIR] [-o text|json]\n"
     "       ursa status --redis.url URL --kafka.bootstrap HOSTS [-o text|json]\n"
     "       ursa status --dataset NAME [--failed]\n"
     "Shows the embedded stack's processes (when the state dir holds one), every\n"
     "instance of every daemon on any host from its heartbeat in Redis (live, or stale:\n"
     "seen in the last 5 minutes but expired), and each topic's size and consumer-group\n"
     "lag from Kafka. Exits 0 when healthy (Redis and Kafka answer; crawler, verifier,\n"
     "trainer and inference each have a live instance; none is degraded), 1 otherwise.\n"
     "-o json gives the same for scripts. With --dataset: per label the verified,\n"
     "duplicate, rejected, failed and pending counts and every reason; --failed lists\n"
     "the URLs that did not become images, with their reasons.\n\n",
     status_defs, 0, 0},
    {"ingest", ingest_cmd,
     "usage: ursa ingest --dataset NAME [--label L] [--max-per-label N] [--no-wait] FILE...\n"
     "Queues the URLs of each FILE for download and verification. One URL a line\n"
     "(blank lines and # comments skipped), the label taken from the file name\n"
     "(urls_black.txt and black.txt give black) unless --label; a .csv file (RFC 4180:\n"
     "quoted fields may hold commas) has url and label columns. URLs are normalised\n"
     "(host case, default port, fragment, dot segments, escapes: one URL written five\n"
     "ways is one URL). Invalid lines are reported and skipped; a URL listed twice is\n"
     "taken once; lists with no valid URL are an error unless --allow-empty. Shows\n"
     "progress until every URL has a final state.\n\n",
     ingest_defs, 1, 0},
    {"retry", retry_cmd,
     "usage: ursa retry --dataset NAME [--pending]\n"
     "Queues again the URLs that failed for a transient reason (timeouts, 429, 5xx,\n"
     "resets); with --pending, every URL without a final state instead (after the\n"
     "embedded broker was restarted and lost its queue).\n\n",
     retry_defs, 0, 0},
    {"export-dataset", export_cmd,
     "usage: ursa export-dataset --dataset NAME DIR\n"
     "Writes the verified images as DIR/<label>/<sha256>.jpg and DIR/labels.csv\n"
     "(name,label), the layouts fast.ai's from_folder and from_csv read.\n\n",
     export_defs, 1, 0},
    {"broker", stack_broker,
     "usage: ursa broker COMMAND [ARGS]\n"
     "Fault drills on the embedded broker (ursa-broker --broker.brokers N):\n"
     "  down N [keep-leaders]  broker N stops answering; its partition leaders and\n"
     "                           group coordinators move to live brokers\n"
     "  up N                     broker N answers again\n"
     "  leader TOPIC PART N      moves a partition's leader to broker N\n"
     "  coordinator GROUP N      moves a consumer group's coordinator\n"
     "  error APIKEY ERR COUNT   the next COUNT requests of Kafka API APIKEY (0 produce,\n"
     "                           1 fetch, 8 offset commit) fail with error code ERR\n"
     "  rtt N MS                 adds MS of round-trip delay to broker N\n"
     "  status                   which brokers are up\n\n", NULL, 1, 0},
    {"env", stack_env,
     "usage: ursa env [--state-dir DIR]\n"
     "Prints URSA_KAFKA_BOOTSTRAP=... and URSA_REDIS_URL=... (and URSA_INFERENCE_URL=...\n"
     "when ursa-inference runs), one per line, for\n"
     "`set -a; eval \"$(ursa env)\"; set +a`.\n\n", NULL, 0, 0},
    {"topics", topics_cmd,
     "usage: ursa topics [--create] [--partitions N] [--replication N]\n"
     "Lists ursa's topics on the Kafka cluster (kafka.bootstrap, or the embedded\n"
     "broker's address) and, with --create, creates the missing ones. Needed once on\n"
     "a real cluster; the embedded broker creates its own. Exits 1 if any is missing\n"
     "(without --create) or cannot be created.\n\n",
     topics_cmd_defs, 0, 0},
    {"verify", verify_cmd,
     "usage: ursa verify [settings] FILE...\n"
     "Runs the verifier's checks on local files; no services needed. One line a file:\n"
     "  FILE<TAB>ok<TAB>WxH            the size after normalisation\n"
     "  FILE<TAB>rejected<TAB>REASON   empty, not_an_image, unsupported_format, truncated,\n"
     "                                corrupt, too_many_pixels or too_small\n"
     "Exits 0 if all are ok, 1 if any is rejected, 2 on a usage error.\n\n",
     verify_cmd_defs, 1, 0},
    {"predict", predict_cmd,
     "usage: ursa predict --model FILE.onnx [--top K] [--json] [--tta MODE] IMAGE...\n"
     "Classifies local images with a model on this CPU; no services needed. One line an\n"
     "image, IMAGE<TAB>LABEL<TAB>PROB for the top class (and the next K-1 pairs with\n"
     "--top K); with --json, {\"file\": ..., \"predictions\": [[label, prob], ...]} sorted by\n"
     "probability, every class when K is 0. Images are resized and cropped as the model's\n"
     "metadata says (224 px, centre crop, ImageNet statistics when it has none); a model\n"
     "without class names uses 0, 1, ... Unreadable images are reported on stderr and\n"
     "make the exit status 1. --tta flip|shift|flip+shift averages the probabilities of\n"
     "views of each image (fast.ai's TTA): it helps a model trained on such views\n"
     "(augmented), and costs one this accuracy when it never saw them (docs/training.md).\n\n",
     predict_defs, 1, 1},
    {"bench-model", bench_model_cmd,
     "usage: ursa bench-model (--model FILE.onnx | --arch resnet18|resnet34) [--batch B]\n"
     "                        [--threads T] [--train]\n"
     "Times the forward pass (or, with --train, a training step) on random input and\n"
     "ends with the line latency_ms=<median> throughput_ips=<images per second>\n"
     "isa=<the engine's instruction-set level; URSA_NN_ISA forces a lower one>.\n\n",
     bench_model_defs, 0, 1},
    {"train", train_cmd,
     "usage: ursa train --dataset NAME [--arch resnet18|resnet34|small] [--pretrained FILE.onnx]\n"
     "                  [--size PX] [--bs N] [--valid-pct P] [--seed S] [--wd WD] [--no-augment]\n"
     "                  [--stage EPOCHS[:MAX_LR[:MAX_LR_HI]] | --unfreeze | --freeze]... [--no-wait]\n"
     "Trains a classifier on a dataset's verified images as a job on ursa-trainer, in\n"
     "stages of fit_one_cycle. The lesson's recipe (4 epochs of the head, then 2 of the\n"
     "whole model with discriminative learning rates):\n"
     "  ursa train --dataset bears --arch resnet34 --pretrained resnet34.onnx \\\n"
     "             --stage 4 --unfreeze --stage 2:3e-5:3e-4\n"
     "Shows a progress bar within each epoch and fast.ai's table row after it; Ctrl-C\n"
     "detaches (the job goes on: ursa job JOB). At the end the model is published:\n"
     "ursa models, ursa export, ursa interp. Exits 0 when the job is done, 1 when it\n"
     "failed or was cancelled.\n\n",
     train_defs, 0, 0},
    {"lr-find", lrfind_cmd,
     "usage: ursa lr-find --dataset NAME [--arch ...] [--pretrained FILE.onnx] [--plot lr.svg]\n"
     "Runs fast.ai's learning-rate finder as a job (1e-7 to 10 over 100 batches, stopping\n"
     "when the smoothed loss passes 4x its best; the weights are left untouched), prints\n"
     "the suggested max_lr (steepest descent) and with --plot draws the loss against\n"
     "the learning rate on a log scale.\n\n",
     lrfind_defs, 0, 0},
    {"audit", audit_cmd,
     "usage: ursa audit --dataset NAME [--folds K] [--dup-threshold C]\n"
     "                  [--recipe last|scratch|flags] [--min-steps N]\n"
     "                  [--arch ...] [--size PX] [--stage ...]... [--no-wait]\n"
     "Finds the images of a dataset that are likely mislabeled, near-duplicates or of\n"
     "something else, as a job on ursa-trainer. K models are trained, each on all but\n"
     "one fold (chosen by content hash), so every image is judged by a model that never\n"
     "saw it; confident learning (per-class thresholds, the confident joint, pruning by\n"
     "noise rate) names the label issues with a suggested label, ranked by how little\n"
     "the model believes the given label, and penultimate-layer features name the\n"
     "near-duplicates. By default the folds start from the dataset's newest model: its\n"
     "body, frozen, whose features of every image are computed once, each fold fitting\n"
     "only a new head on them (no augmentation; near-duplicates then come from the\n"
     "body's features); --pretrained FILE.onnx does the same with another body.\n"
     "--recipe scratch trains each fold as the newest model was trained, --recipe flags\n"
     "as the flags say. A fold trains at least --min-steps optimizer steps: on a small\n"
     "dataset the recipe's epochs are scaled up (ursa job JOB says so). When the models\n"
     "get more than a quarter of the images wrong out of fold, the job says that its\n"
     "suggestions are unreliable.\n"
     "Then: ursa clean --dataset NAME.\n\n",
     audit_defs, 0, 0},
    {"clean", clean_cmd,
     "usage: ursa clean --dataset NAME [--kinds K,...] [--limit N]\n"
     "       ursa clean --dataset NAME --apply cleaned.csv [--delete-missing]\n"
     "       ursa clean --dataset NAME --accept-suggestions [--min-score S] [--delete-score S]\n"
     "                  [--kinds K,...]\n"
     "The lesson's cleaning step. Alone: the last audit's suspects as TSV, most likely\n"
     "first (url, blob, given, suggestion, score, kind, image, partner), leaving out the\n"
     "images decided since. --apply takes decisions in fast.ai's cleaned.csv form;\n"
     "--accept-suggestions acts on the suspects in bulk. Every decision is an edit\n"
     "(ursa edits) that can be undone (ursa edit restore); no image leaves the blob\n"
     "store. Each edit carries the decision in force it was made on; ursa-verifier\n"
     "refuses it as a conflict when another edit of the image (a concurrent cleaner)\n"
     "changed that meanwhile, and refuses one that does not hold (an unknown image,\n"
     "a label that is no class of the dataset). Refused edits are listed per image\n"
     "on stderr; the others are applied.\n"
     "Exits 0 when every edit was applied, 3 when some were refused (the rest\n"
     "applied), 2 on a bad decisions file (then nothing is sent), 1 on an error or\n"
     "when edits were not applied within --wait-s.\n\n",
     clean_defs, 0, 0},
    {"edit", edit_cmd,
     "usage: ursa edit --dataset NAME (delete IMAGE | restore IMAGE | relabel IMAGE LABEL)\n"
     "One cleaning decision. IMAGE is an image id, its blob, <label>/<blob>.jpg as\n"
     "export-dataset names it, or the URL it came from. LABEL is a class of the\n"
     "dataset (a label some URL was ingested under). Refused as a conflict when the\n"
     "image's decision in force changed between reading it and applying the edit.\n"
     "Exits 0 when applied, 3 when refused (why on stderr), 2 on a bad argument, 1\n"
     "on an error or when it was not applied within --wait-s.\n\n",
     edit_defs, 1, 0},
    {"edits", edits_cmd,
     "usage: ursa edits --dataset NAME [--from N] [--limit N]\n"
     "The dataset's edits in the order they were applied: number, time, op, image, the\n"
     "label before and after, author and reason. Training jobs record the last one they\n"
     "saw (ursa job JOB).\n\n",
     edits_defs, 0, 0},
    {"datasets", datasets_cmd,
     "usage: ursa datasets\n"
     "       ursa datasets delete NAME [--yes] [--force]\n"
     "Lists the datasets with their URLs, verified and failed images, edits and models.\n"
     "delete removes a dataset: its URLs and their states, its labels, edits and audits,\n"
     "and its models from the registry. Without --yes it says what would go and deletes\n"
     "nothing. Refused while a job on the dataset is queued or running, and while URLs\n"
     "are still being downloaded or verified (unless --force). The blobs (images, models)\n"
     "stay in the blob store until ursa gc; the name can be ingested into again.\n\n",
     datasets_defs, 1, 0},
    {"gc", gc_cmd,
     "usage: ursa gc [--dry-run] [--older-than-hours H] [--force]\n"
     "Removes the blobs nothing refers to: no verified image or URL list of a dataset,\n"
     "no job (snapshots, checkpoints, results) and no model. Blobs are shared, so deleting\n"
     "a dataset, job or model leaves its blobs behind; this collects them. Only blobs last\n"
     "written at least H hours ago go (168: a week, Kafka's retention). Says what it\n"
     "keeps and what it removes; --dry-run removes nothing and lists them. Refused while\n"
     "URLs are being downloaded or verified or jobs are queued or running (--force).\n\n",
     gc_defs, 0, 0},
    {"jobs", jobs_cmd,
     "usage: ursa jobs [--dataset NAME] [--limit N]\n"
     "       ursa jobs delete JOB\n"
     "Lists the newest training and lr_find jobs with their state and progress;\n"
     "delete forgets an ended job (as ursa job delete).\n\n",
     jobs_defs, 1, 0},
    {"job", job_cmd,
     "usage: ursa job JOB\n"
     "       ursa job cancel JOB\n"
     "       ursa job delete JOB\n"
     "Shows a job: its state, settings, data, the epoch table so far and its result or\n"
     "error. cancel stops it: at once when queued, within seconds when running. delete\n"
     "forgets an ended job (a queued or running one must be cancelled first); a replay\n"
     "of its message does not make it again. Its model stays (ursa models delete).\n\n",
     job_defs, 1, 0},
    {"models", models_cmd,
     "usage: ursa models [--dataset NAME]\n"
     "       ursa models delete MODEL\n"
     "Lists the published models, newest first, with their validation metrics; delete\n"
     "takes one out of the registry (a server serving it goes on until it loads another).\n\n",
     models_defs, 1, 0},
    {"export", export_model_cmd,
     "usage: ursa export MODEL OUT.onnx\n"
     "Writes a published model's ONNX file (class names, input size and normalisation\n"
     "in its metadata; ursa predict, ursa-inference and onnxruntime read it).\n\n",
     export_model_defs, 1, 0},
    {"interp", interp_cmd,
     "usage: ursa interp MODEL [--top-losses K] [--plot FILE.svg]\n"
     "What the model gets wrong on its validation set: the confusion matrix, the most\n"
     "confused pairs (actual, predicted, count) and with --top-losses the K worst\n"
     "images (file, actual, predicted, loss, probability of the actual class).\n\n",
     interp_defs, 1, 0},
    {"classify", classify_cmd,
     "usage: ursa classify --dataset NAME --out results.jsonl [--top K] URLS.txt...\n"
     "Classifies every URL of the lists (one a line, # comments skipped) on ursa-inference\n"
     "through ursa.classify.requests, with a progress bar, and writes one JSON line a URL:\n"
     "{\"url\": ..., \"model\": ..., \"predictions\": [[label, prob], ...]} or an \"error\".\n"
     "A URL already classified for the dataset is answered from the stored result.\n\n",
     classify_defs, 1, 0},
    {NULL, NULL, NULL, NULL, 0, 0}};

static void usage(FILE *out) {
    fprintf(out,
            "usage: ursa COMMAND [settings] [args]\n\n"
            "Commands:\n"
            "  demo     the lesson end to end on Fashion-MNIST with dirty data (start here)\n"
            "  up       start the embedded stack (redis, broker, daemons)\n"
            "  down     stop it\n"
            "  status   instances, health and topic backlog, from any host\n"
            "  env      print URSA_KAFKA_BOOTSTRAP and URSA_REDIS_URL for eval\n"
            "  topics   list ursa's topics on a cluster; --create the missing ones\n"
            "  verify   check local image files as the verifier would\n"
            "  ingest   queue URL lists for download and verification into a dataset\n"
            "  retry    queue again a dataset's transient failures (--pending: unfinished)\n"
            "  export-dataset  write a dataset's verified images as <label>/<hash>.jpg\n"
            "  datasets list the datasets;  datasets delete NAME --yes\n"
            "  gc       remove the blobs nothing refers to any more\n"
            "  train    train a classifier on a dataset (a job on ursa-trainer)\n"
            "  lr-find  the learning-rate finder as a job; --plot draws it\n"
            "  audit    find mislabeled images, near-duplicates and outliers (a job)\n"
            "  clean    list the audit's suspects, apply decisions (cleaned.csv) or accept them\n"
            "  edit     delete, relabel or restore one image;  edits: the dataset's edits\n"
            "  jobs     list training jobs;  job JOB: one job;  job cancel JOB\n"
            "  models   list published models;  export MODEL OUT.onnx;  interp MODEL\n"
            "  classify classify URL lists in bulk on ursa-inference (JSON lines out)\n"
            "  predict  classify local images with a model file\n"
            "  bench-model  time a model's forward pass or training step on this CPU\n\n"
            "`ursa COMMAND --help` lists a command's settings; `ursa --version` the build.\n"
            "Settings come from defaults < --config FILE < URSA_* environment < --flags.\n");
}

/* Short flags, spelled out before the settings are read (a flag table,
 * not a setting: settings are --name). */
static const struct {
    const char *flag, *setting;
} short_flags[] = {{"-o", "--output"}, {"-v", "--log.level=info"}, {NULL, NULL}};

static void spell_out(int argc, char **argv) {
    for (int i = 2; i < argc && strcmp(argv[i], "--"); i++)
        for (int k = 0; short_flags[k].flag; k++)
            if (!strcmp(argv[i], short_flags[k].flag)) argv[i] = (char *)short_flags[k].setting;
}

/* Moves flags before the positional arguments (`ursa interp MODEL
 * --top-losses 5` as well as `ursa interp --top-losses 5 MODEL`), with a
 * "--" between them, since settings stop at the first argument. argv[0]
 * and argv[1] (the command) stay. Returns a new argv (kept reachable in a
 * static) of *argc entries, or NULL when nothing needs to move. */
static char **flags_first(const cfg *c, int *argc, char **argv) {
    static char **held;
    static char dd[] = "--";
    int n = *argc;
    char **flags = malloc(sizeof(char *) * (size_t)n), **pos = malloc(sizeof(char *) * (size_t)n);
    char **out = malloc(sizeof(char *) * (size_t)(n + 2));
    int nf = 0, np = 0, dashdash = 0, moved = 0;
    if (!flags || !pos || !out) goto done;
    for (int i = 2; i < n; i++) {
        const char *a = argv[i];
        if (!dashdash && !strcmp(a, "--")) {
            dashdash = 1;
            continue;
        }
        if (dashdash || strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            pos[np++] = argv[i];
            continue;
        }
        moved |= np > 0; /* a flag after an argument */
        flags[nf++] = argv[i];
        if (!strchr(a, '=') && strcmp(a, "--help") && !cfg_is_bool(c, a + 2) && i + 1 < n)
            flags[nf++] = argv[++i];
    }
    if (!moved) goto done;
    int k = 0;
    out[k++] = argv[0];
    out[k++] = argv[1];
    for (int i = 0; i < nf; i++) out[k++] = flags[i];
    out[k++] = dd;
    for (int i = 0; i < np; i++) out[k++] = pos[i];
    out[k] = NULL;
    free(held);
    held = out;
    out = NULL;
    *argc = k;
done:
    free(flags);
    free(pos);
    free(out);
    return moved ? held : NULL;
}

int main(int argc, char **argv) {
    ulog_init("cli");
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("ursa %s\n", service_version());
        return 0;
    }
    static char *owned, **targv; /* static: still reachable on every return */
    if (!strcmp(argv[1], "train") || !strcmp(argv[1], "audit")) { /* ordered --stage flags */
        int n;
        if (!(targv = train_argv(argc - 1, argv + 1, &n, &owned))) return 1;
        targv = realloc(targv, sizeof(char *) * (size_t)(n + 2));
        if (!targv) return 1;
        memmove(targv + 1, targv, sizeof(char *) * (size_t)n);
        targv[0] = argv[0];
        targv[n + 1] = NULL;
        argc = n + 1;
        argv = targv;
    }
    spell_out(argc, argv);
    for (const command *cmd = commands; cmd->name; cmd++) {
        if (strcmp(cmd->name, argv[1]) != 0) continue;
        char nerr[200];
        /* the engine starts before the settings are read (its BLAS check
         * may restart the program): what it found (event=blas, nn_isa) is
         * said with -v, --log.level or URSA_LOG_LEVEL, not before a
         * command's own output by default */
        const char *envl = getenv("URSA_LOG_LEVEL");
        if (envl && ulog_level_parse(envl) >= 0) ulog_level = ulog_level_parse(envl);
        int engine_level = ulog_level, verbose = envl != NULL;
        for (int i = 2; i < argc && strcmp(argv[i], "--"); i++)
            if (!strncmp(argv[i], "--log.level", 11)) verbose = 1;
        if (!verbose && engine_level > ULOG_WARN) ulog_level = ULOG_WARN;
        if (cmd->nn && nn_engine_init(argv, nerr, sizeof nerr) != URSA_OK) {
            fprintf(stderr, "ursa %s: %s\n", cmd->name, nerr);
            return 2;
        }
        ulog_level = engine_level;
        /* the commands running the engine take nn.* (what a model file may ask for) */
        const cfg_def *tables[9];
        int nt = 0;
        tables[nt++] = cfg_defs_base;
        tables[nt++] = cfg_defs_kafka;
        tables[nt++] = cfg_defs_redis;
        tables[nt++] = cfg_defs_blob;
        tables[nt++] = stack_defs;
        tables[nt++] = img_cfg_defs;
        if (cmd->nn) tables[nt++] = nn_cfg_defs;
        tables[nt++] = cmd->defs;
        tables[nt] = NULL;
        cfg *c = cfg_new(tables, "kafka.");
        if (!c) return 1;
        char err[512];
        int argi, help;
        char **reordered = cmd->takes_args ? flags_first(c, &argc, argv) : NULL;
        if (reordered) argv = reordered;
        if (cfg_load(c, argc - 1, argv + 1, &argi, &help, err, sizeof err)) {
            fprintf(stderr, "ursa %s: %s\n", cmd->name, err);
            cfg_destroy(c);
            return 2;
        }
        if (help) {
            printf("%s", cmd->usage);
            cfg_print_help(c, stdout);
            cfg_destroy(c);
            return 0;
        }
        if (argi < argc - 1 && !cmd->takes_args) {
            fprintf(stderr, "ursa %s: unexpected argument \"%s\"\n", cmd->name,
                    argv[argi + 1]);
            cfg_destroy(c);
            return 2;
        }
        int lvl = ulog_level_parse(cfg_str(c, "log.level"));
        if (lvl >= 0) ulog_level = lvl;
        if (cmd->nn) nn_limits_from_cfg(c);
        int rc = cmd->fn(c, argc - 1 - argi, argv + 1 + argi);
        cfg_destroy(c);
        free(targv);
        free(owned);
        return rc;
    }
    fprintf(stderr, "ursa: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}
