/* edit-probe: sends one DatasetEdit to ursa.dataset.edits as given, straight
 * to Kafka (no pending record, no check), for the integration tests of
 * ursa-verifier's own checks:
 *
 *   edit-probe --dataset D --image ID --op OP [--label L] [--new-label N]
 *              [--base none|delete|relabel] [--base-label B]
 *
 * Prints the message id it sent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "kq.h"
#include "msg.h"
#include "service.h"
#include "statedir.h"
#include "topics.h"

static const cfg_def probe_defs[] = {
    {"dataset", CFG_STR, "", 1, 0, "the dataset"},
    {"image", CFG_STR, "", 1, 0, "the image id"},
    {"op", CFG_STR, "delete", 1, 0, "delete, relabel or restore (or anything)"},
    {"label", CFG_STR, "", 1, 0, "the label before"},
    {"new-label", CFG_STR, "", 1, 0, "the new label of a relabel"},
    {"base", CFG_STR, "none", 1, 0, "the decision in force it was made on"},
    {"base-label", CFG_STR, "", 1, 0, "base relabel: its label"},
    {NULL, 0, NULL, 0, 0, NULL}};

int main(int argc, char **argv) {
    static const char usage[] = "usage: edit-probe --dataset D --image ID --op OP [settings]\n";
    const cfg_def *const tables[] = {cfg_defs_base, cfg_defs_kafka, probe_defs, NULL};
    cfg *c;
    int argi;
    int rc = service_setup("edit-probe", SERVICE_NO_BEAT, usage, tables, argc, argv, &c, &argi);
    if (rc >= 0) return rc;
    char bs[512], err[512];
    if (statedir_kafka_bootstrap(c, bs, sizeof bs, err, sizeof err)) {
        fprintf(stderr, "edit-probe: %s\n", err);
        return 2;
    }
    kq_producer *p = kq_producer_new(c, bs, err, sizeof err);
    if (!p) {
        fprintf(stderr, "edit-probe: %s\n", err);
        return 1;
    }
    Ursa__Header h;
    char id[33], key[300];
    msg_header_init(&h, id, cfg_str(c, "dataset"), NULL);
    Ursa__DatasetEdit m = URSA__DATASET_EDIT__INIT;
    m.header = &h;
    m.op = (char *)cfg_str(c, "op");
    m.image = (char *)cfg_str(c, "image");
    m.label = (char *)cfg_str(c, "label");
    m.new_label = (char *)cfg_str(c, "new-label");
    m.base_op = (char *)cfg_str(c, "base");
    m.base_label = (char *)cfg_str(c, "base-label");
    m.author = "edit-probe";
    snprintf(key, sizeof key, "%s/%s", cfg_str(c, "dataset"), cfg_str(c, "image"));
    void *buf = NULL;
    size_t len = 0;
    rc = 1;
    if (msg_pack(&m.base, &buf, &len) == URSA_OK &&
        kq_produce(p, TOPIC_DATASET_EDITS, key, strlen(key), buf, len, NULL, 0, NULL, NULL) ==
            URSA_OK &&
        kq_producer_flush(p, 15000) == URSA_OK) {
        printf("%s\n", id);
        rc = 0;
    } else {
        fprintf(stderr, "edit-probe: Kafka did not take the edit\n");
    }
    free(buf);
    kq_producer_destroy(p);
    cfg_destroy(c);
    return rc;
}
