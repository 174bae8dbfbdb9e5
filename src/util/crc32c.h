/* crc32c: CRC-32C (Castagnoli), the checksum of each journal record. */
#pragma once
/*
 * Contract. No state: owns nothing, borrows @data for the call, calls no other module. The
 * journal's record format (journal_record.c) depends on its exact values: never change them.
 */

#include <stddef.h>
#include <stdint.h>

uint32_t crc32c(uint32_t crc, const void *data, size_t len);
