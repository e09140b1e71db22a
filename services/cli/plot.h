/* plot.h: the CLI's charts as SVG files, which every browser and image
 * viewer opens: lr_find's loss against the learning rate (log scale), and a
 * confusion matrix. Each returns 0, or -1 with errno set when the file
 * cannot be written. */
#ifndef URSA_CLI_PLOT_H
#define URSA_CLI_PLOT_H

/* 1 if path ends in .svg (the only format written). */
int plot_path_ok(const char *path);

int plot_lr_svg(const char *path, const double *lr, const double *loss, int n, double suggestion);

/* counts[actual * n + predicted] */
int plot_confusion_svg(const char *path, const char *const *classes, int n, const long *counts,
                       const char *title);

#endif
