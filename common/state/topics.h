/* topics.h: the Kafka topics of ursa and who consumes them.
 *
 * One table, used by the broker (to create them), the CLI (to show backlog)
 * and the daemons (to subscribe and to dead-letter), with each topic's
 * message type and key; docs/development.md lists them beside the Redis key
 * families and their owners. */
#ifndef URSA_TOPICS_H
#define URSA_TOPICS_H

#include <stddef.h>

#define TOPIC_CRAWL_REQUESTS "ursa.crawl.requests"
#define TOPIC_IMAGES_DOWNLOADED "ursa.images.downloaded"
#define TOPIC_IMAGES_VERIFIED "ursa.images.verified"
#define TOPIC_IMAGES_REJECTED "ursa.images.rejected"
#define TOPIC_TRAIN_JOBS "ursa.train.jobs"
#define TOPIC_TRAIN_PROGRESS "ursa.train.progress"
#define TOPIC_MODELS_PUBLISHED "ursa.models.published"
#define TOPIC_CLASSIFY_REQUESTS "ursa.classify.requests"
#define TOPIC_CLASSIFY_RESULTS "ursa.classify.results"
#define TOPIC_DATASET_EDITS "ursa.dataset.edits"

typedef struct {
    const char *name;
    const char *group;   /* consumer group that works it off; NULL: none */
    const char *message; /* its protobuf message (proto/ursa.proto) */
    const char *key;     /* what a message's key is: the partitioning */
    const char *about;
} topic_info;

/* The topics, ending with a {NULL} entry. Dead-letter topics included. */
extern const topic_info topics_all[];
size_t topics_count(void);

#endif
