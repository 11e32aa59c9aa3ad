#ifndef IFN_QUANTIZE_SAMPLE_H
#define IFN_QUANTIZE_SAMPLE_H

extern const char quantize_sample_text[];

#endif
