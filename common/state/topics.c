/* topics.c: the topic table; see topics.h. */
#include "topics.h"

#include <stdio.h>
#include <string.h>

const topic_info topics_all[] = {
    {TOPIC_CRAWL_REQUESTS, "ursa-crawler", "CrawlRequest", "URL hash", "URLs to download"},
    {TOPIC_IMAGES_DOWNLOADED, "ursa-verifier", "ImageDownloaded", "sha256 of the bytes",
     "downloaded bytes to verify (small ones inside the message)"},
    {TOPIC_IMAGES_VERIFIED, NULL, "ImageVerified", "sha256 of the JPEG",
     "verified, normalised images"},
    {TOPIC_IMAGES_REJECTED, NULL, "ImageRejected", "URL hash", "URLs that ended without an image"},
    {TOPIC_TRAIN_JOBS, "ursa-trainer", "TrainJob", "job id", "training, lr_find and audit jobs"},
    {TOPIC_TRAIN_PROGRESS, NULL, "TrainProgress", "job id", "per-epoch progress of jobs"},
    {TOPIC_MODELS_PUBLISHED, NULL, "ModelPublished", "model id",
     "trained models (every server reads all)"},
    {TOPIC_CLASSIFY_REQUESTS, "ursa-inference", "ClassifyRequest", "request id",
     "bulk classification requests"},
    {TOPIC_CLASSIFY_RESULTS, NULL, "ClassifyResult", "request id", "bulk classification results"},
    {TOPIC_DATASET_EDITS, "ursa-verifier", "DatasetEdit", "dataset and image id",
     "cleaning: delete, relabel, restore"},
    {"ursa.dlq.crawler", NULL, "the failed message", "its key", "dead letters of the crawler"},
    {"ursa.dlq.verifier", NULL, "the failed message", "its key", "dead letters of the verifier"},
    {"ursa.dlq.trainer", NULL, "the failed message", "its key", "dead letters of the trainer"},
    {"ursa.dlq.inference", NULL, "the failed message", "its key",
     "dead letters of the inference server"},
    {NULL, NULL, NULL, NULL, NULL}};

size_t topics_count(void) { return sizeof topics_all / sizeof topics_all[0] - 1; }
