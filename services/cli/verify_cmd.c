/* verify_cmd.c: runs img_verify() on each file and prints its verdict. */
#include "verify_cmd.h"

#include <libgen.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "util.h"

const cfg_def verify_cmd_defs[] = {
    {"out", CFG_STR, "", 1, 0, "also write each accepted image, normalised, to DIR/NAME.jpg"},
    {NULL, 0, NULL, 0, 0, NULL}};

/* Writes the normalised JPEG of path into dir. */
static int write_out(const char *dir, const char *path, const uint8_t *jpeg, size_t len) {
    char copy[4096], out[4200];
    snprintf(copy, sizeof copy, "%s", path);
    snprintf(out, sizeof out, "%s/%s.jpg", dir, basename(copy));
    if (util_mkdirs(dir) || util_write_file_atomic(out, jpeg, len)) {
        fprintf(stderr, "ursa verify: cannot write %s\n", out);
        return -1;
    }
    return 0;
}

int verify_cmd(const cfg *c, int argc, char **argv) {
    if (argc < 1) {
        fprintf(stderr, "ursa verify: no files given (see ursa verify --help)\n");
        return 2;
    }
    img_opts o = img_opts_from_cfg(c);
    int rejected = 0, unreadable = 0;
    for (int i = 0; i < argc; i++) {
        char *data = NULL;
        size_t len = 0;
        /* the byte cap is generous: the pixel check is what stops bombs */
        ursa_err err = util_read_file(argv[i], (size_t)1 << 30, &data, &len);
        if (err) {
            fprintf(stderr, "ursa verify: %s: %s\n", argv[i],
                    err == URSA_ERR_NOT_FOUND ? strerror(ENOENT) : ursa_err2str(err));
            unreadable = 1;
            continue;
        }
        uint8_t *jpeg = NULL;
        size_t jl = 0;
        int w = 0, h = 0;
        img_reject rej;
        err = img_verify((const uint8_t *)data, len, &o, &jpeg, &jl, &w, &h, &rej);
        if (err == URSA_OK) {
            printf("%s\tok\t%dx%d\n", argv[i], w, h);
            if (*cfg_str(c, "out") && write_out(cfg_str(c, "out"), argv[i], jpeg, jl))
                unreadable = 1;
        } else if (err == URSA_ERR_INVALID) {
            printf("%s\trejected\t%s\n", argv[i], rej.reason);
            fprintf(stderr, "ursa verify: %s: %s\n", argv[i], rej.detail);
            rejected = 1;
        } else {
            fprintf(stderr, "ursa verify: %s: %s\n", argv[i], ursa_err2str(err));
            unreadable = 1;
        }
        fflush(stdout);
        free(jpeg);
        free(data);
    }
    return unreadable ? 2 : rejected ? 1 : 0;
}
