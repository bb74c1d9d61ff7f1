/*
 * pdgpu.h: the contract between the GPU loader and its users.
 *
 * The loader dlopens the CUDA driver (libcuda.so.1, never the toolkit's
 * libcuda.so stub) at run time.  Anything missing is an ordinary answer,
 * "not available: <reason>", never a failure to build or start.
 */
#ifndef PDGPU_H
#define PDGPU_H

#include <stddef.h>

#define PDGPU_API_VERSION 1

/* Probe the driver.  Returns the number of usable devices (>= 1), or 0 and
 * writes a one-line reason into why[n].  Safe to call repeatedly; the probe
 * runs once per process. */
int pdgpu_probe(char *why, size_t n);

#endif
