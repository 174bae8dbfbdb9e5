/* crc32c: CRC-32C (Castagnoli), the checksum of each journal record. */
#include "util/crc32c.h"

/* Bitwise form: journal records are a few hundred bytes, so a table buys nothing measurable. */
uint32_t crc32c(uint32_t crc, const void *data, size_t len)
{
	const unsigned char *p = data;

	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
	}
	return ~crc;
}
