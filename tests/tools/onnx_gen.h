/* onnx_gen.h: hostile ONNX files for the tests, written as raw protobuf
 * bytes (no protobuf library), so a file can say what a real exporter
 * never would: channel counts that wrap an int, graphs nested thousands
 * deep, tens of thousands of nodes, values nobody reads.
 *
 * Each generator returns a malloc'd buffer the caller frees, and its
 * length in *len; NULL when out of memory. */
#ifndef URSA_ONNX_GEN_H
#define URSA_ONNX_GEN_H

#include <stddef.h>
#include <stdint.h>

/* input [1,c,s,s] (c 1 or 3), GlobalAveragePool, then `levels` Concats
 * of a value with itself and one more with the pool's output, which is the
 * graph's: 32 levels on 1 channel make 2^32 + 1 channels, 1 in an int */
uint8_t *onnx_gen_concat(int c, int s, int levels, size_t *len);

/* a graph whose only node has a graph attribute whose only node has a
 * graph attribute ... `depth` times */
uint8_t *onnx_gen_deep(int depth, size_t *len);

/* the same nesting through value types: an input whose type is a
 * sequence of a sequence of ... `depth` times */
uint8_t *onnx_gen_deep_type(int depth, size_t *len);

/* input [1,3,8,8]; `nodes` Relu nodes, each reading the input, and a
 * GlobalAveragePool of the last as the output: every node's input is the
 * first value named, far from the latest */
uint8_t *onnx_gen_wide(int nodes, size_t *len);

/* input [1,3,s,s]; `convs` 3x3 convolutions of the input to `cout`
 * channels sharing one weight, nobody reading any but the last, then
 * GlobalAveragePool: a few KB that ask for convs x cout x s x s floats */
uint8_t *onnx_gen_fanout(int s, int convs, int cout, size_t *len);

/* input [1,3,s,s]; one 1x1 convolution to `cout` channels, then
 * GlobalAveragePool: a single value of cout x s x s floats */
uint8_t *onnx_gen_big_value(int s, int cout, size_t *len);

/* one Conv whose attribute `name` (kernel_shape, strides, pads,
 * dilations, group) is set to v on an otherwise ordinary 3x3 conv of a
 * [1,3,8,8] input */
uint8_t *onnx_gen_conv_attr(const char *name, int64_t v, size_t *len);

/* a Conv weight initializer whose dims say 4 x 3 x 3 x 3 but whose data
 * has `nfloats` floats */
uint8_t *onnx_gen_short_weight(int nfloats, size_t *len);

#endif
