/* crc32c: CRC-32C (Castagnoli), the checksum of each journal record. */
#pragma once

#include <stddef.h>
#include <stdint.h>

uint32_t crc32c(uint32_t crc, const void *data, size_t len);
