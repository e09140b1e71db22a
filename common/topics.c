/* topics.c: the topic table; see topics.h. */
#include "topics.h"

#include <stdio.h>
#include <string.h>

const topic_info topics_all[] = {
    {TOPIC_CRAWL_REQUESTS, "ursa-crawler", "URLs to download"},
    {TOPIC_IMAGES_DOWNLOADED, "ursa-verifier", "downloaded bytes to verify"},
    {TOPIC_IMAGES_VERIFIED, NULL, "verified, normalised images"},
    {TOPIC_IMAGES_REJECTED, NULL, "URLs that ended without an image"},
    {TOPIC_TRAIN_JOBS, "ursa-trainer", "training and lr_find jobs"},
    {TOPIC_TRAIN_PROGRESS, NULL, "per-epoch progress of jobs"},
    {TOPIC_MODELS_PUBLISHED, NULL, "trained models (every server reads all)"},
    {TOPIC_CLASSIFY_REQUESTS, "ursa-inference", "bulk classification requests"},
    {TOPIC_CLASSIFY_RESULTS, NULL, "bulk classification results"},
    {TOPIC_DATASET_EDITS, "ursa-verifier", "cleaning: delete or relabel"},
    {"ursa.dlq.crawler", NULL, "dead letters of the crawler"},
    {"ursa.dlq.verifier", NULL, "dead letters of the verifier"},
    {"ursa.dlq.trainer", NULL, "dead letters of the trainer"},
    {"ursa.dlq.inference", NULL, "dead letters of the inference server"},
    {NULL, NULL, NULL}};

size_t topics_count(void) { return sizeof topics_all / sizeof topics_all[0] - 1; }

void topics_dlq_name(const char *group, char *out, size_t size) {
    const char *stage = strncmp(group, "ursa-", 5) == 0 ? group + 5 : group;
    snprintf(out, size, "ursa.dlq.%s", stage);
}
