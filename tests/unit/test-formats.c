/* Unit tests for the drop formats: the CSV/TSV reader, gzip and zstd streams, the record source over them. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "record/record_csv_scan.h"
#include "record/record_decompress.h"
#include "record/record_source.h"
#include "tap.h"

#define MAX_RECORD 4096
static const struct source_limits LIMITS = { .max_record_bytes = MAX_RECORD };

static int memfile(const void *data, size_t len)
{
	int fd = memfd_create("t", MFD_CLOEXEC);

	if (fd < 0 || write(fd, data, len) != (ssize_t)len)
		abort();
	return fd;
}

static size_t gzip_of(const char *in, size_t n, unsigned char *out, size_t cap)
{
	z_stream z = { 0 };

	if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		abort();
	z.next_in = (unsigned char *)in;
	z.avail_in = (uInt)n;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	if (deflate(&z, Z_FINISH) != Z_STREAM_END)
		abort();
	deflateEnd(&z);
	return cap - z.avail_out;
}

struct got {
	char text[1 << 17];       /* lines as "N:json" or "N!error|text" joined by \n */
	int rc;
	char err[512];
};

/* Read everything @name holds as the source does. */
static void read_all(const char *name, const void *data, size_t len, const struct csv_options *o, off_t offset,
		     uint64_t lineno, struct got *g)
{
	struct source *s = NULL;
	struct ndjson_line ln;
	size_t used = 0;
	int fd = memfile(data, len);

	memset(g, 0, sizeof(*g));
	g->rc = record_source_open(&s, fd, name, o, offset, lineno, &LIMITS);
	while (g->rc == 0 && used < sizeof(g->text) - 1024 && (g->rc = record_source_next(s, &ln)) == 1) {
		if (ln.too_long)
			used += (size_t)snprintf(g->text + used, sizeof(g->text) - used, "%llu!too long\n",
						  (unsigned long long)ln.lineno);
		else if (ln.error)
			used += (size_t)snprintf(g->text + used, sizeof(g->text) - used, "%llu!%s|%.*s\n",
						  (unsigned long long)ln.lineno, ln.error, (int)ln.len, ln.data ? ln.data : "");
		else
			used += (size_t)snprintf(g->text + used, sizeof(g->text) - used, "%llu:%.*s\n",
						  (unsigned long long)ln.lineno, (int)ln.len, ln.data);
		g->rc = 0;
	}
	if (s && record_source_error(s))
		snprintf(g->err, sizeof(g->err), "%s", record_source_error(s));
	record_source_free(s);
	close(fd);
}

static struct csv_options opts(const char *columns, enum csv_empty empty)
{
	struct csv_options o = { .primary_key = "id", .empty = empty };
	char err[256];

	if (columns && record_csv_columns_parse(&o, columns, err, sizeof(err)) < 0)
		abort();
	return o;
}

static void expect(const char *what, const char *name, const char *csv, struct csv_options *o, const char *want)
{
	struct got g;

	read_all(name, csv, strlen(csv), o, 0, 1, &g);
	if (!ok(g.rc == 0 && !strcmp(g.text, want), "%s", what))
		diag("rc %d, err '%s', got:\n%swant:\n%s", g.rc, g.err, g.text, want);
}

static void csv_rows(void)
{
	struct csv_options o = opts(NULL, CSV_EMPTY_OMIT);

	expect("a header and rows: one compact JSON object per row, strings escaped", "a.csv",
	       "id,name\n1,Ann\n2,\"Bob \\\\ \"\"B\"\"\"\n", &o,
	       "2:{\"id\":\"1\",\"name\":\"Ann\"}\n3:{\"id\":\"2\",\"name\":\"Bob \\\\\\\\ \\\"B\\\"\"}\n");
	expect("delimiters, LF and CRLF inside quoted cells; a row's number is the line it starts on", "a.csv",
	       "id,note\r\n1,\"a,b\nc\"\r\n2,\"x\r\ny\"\r\n3,z\r\n", &o,
	       "2:{\"id\":\"1\",\"note\":\"a,b\\nc\"}\n4:{\"id\":\"2\",\"note\":\"x\\r\\ny\"}\n6:{\"id\":\"3\",\"note\":\"z\"}\n");
	expect("a byte order mark is skipped; the last row needs no line break; blank lines count", "a.csv",
	       "\xEF\xBB\xBFid,v\n\n1,a\n\n2,b", &o, "3:{\"id\":\"1\",\"v\":\"a\"}\n5:{\"id\":\"2\",\"v\":\"b\"}\n");
	expect("TSV: tab-separated, commas are text", "a.tsv", "id\tv\n1\ta,b\n", &o, "2:{\"id\":\"1\",\"v\":\"a,b\"}\n");
	expect("a wrong number of cells is rejected with the row's text; the rest goes on", "a.csv",
	       "id,v\n1,a,x\n2\n3,c\n", &o,
	       "2!3 cell(s), the header has 2|1,a,x\n3!1 cell(s), the header has 2|2\n4:{\"id\":\"3\",\"v\":\"c\"}\n");
	expect("text after a closing quote is rejected; the next row is read as usual", "a.csv",
	       "id,v\n1,\"a\"b\n2,c\n", &o,
	       "2!text after a closing quote (a quote inside a quoted cell must be doubled)|1,\"a\"b\n"
	       "3:{\"id\":\"2\",\"v\":\"c\"}\n");
	expect("an unterminated quote is rejected with the line it starts on, and the rest goes up", "a.csv",
	       "id,v\n1,a\n2,\"never closed\n3,c\n4,d\n", &o,
	       "2:{\"id\":\"1\",\"v\":\"a\"}\n3!" CSV_QUOTE_TO_END "|2,\"never closed\n4:{\"id\":\"3\",\"v\":\"c\"}\n"
	       "5:{\"id\":\"4\",\"v\":\"d\"}\n");
	expect("an unterminated quote on the last line is that row's alone", "a.csv", "id,v\n1,\"open", &o,
	       "2!unterminated quote: the cell runs to the end of the file|1,\"open\n");
	expect("a stray quote closed by a later one is no row: its line alone is rejected, the lines after are rows", "a.csv",
	       "id,v\n1,\"5 inch\n2,b\n3,\"c\n4,d\n", &o,
	       "2!" CSV_QUOTE_NOT_A_ROW "|1,\"5 inch\n3:{\"id\":\"2\",\"v\":\"b\"}\n4!" CSV_QUOTE_TO_END "|3,\"c\n"
	       "5:{\"id\":\"4\",\"v\":\"d\"}\n");
	expect("a stray quote closed by a later one in a row of the right width: the lines between read as rows, so its "
	       "line alone is rejected and they go up; the closing line's quote is a character", "inch.csv",
	       "id,v\n1,\"5 inch\n2,b\n3,c\n4,12\"\n5,e\n", &o,
	       "2!unterminated quote: the cell runs on past this line over 2 lines that read as rows of their own (only "
	       "this line is rejected)|1,\"5 inch\n3:{\"id\":\"2\",\"v\":\"b\"}\n4:{\"id\":\"3\",\"v\":\"c\"}\n"
	       "5:{\"id\":\"4\",\"v\":\"12\\\"\"}\n6:{\"id\":\"5\",\"v\":\"e\"}\n");
	expect("the same with CRLF, blank lines between (not counted, skipped), the quote closed mid-row", "inch.csv",
	       "id,v,w\r\n1,\"5 inch,x\r\n2,b,x\r\n\r\n3,c,x\r\n4,12\",x\r\n", &o,
	       "2!unterminated quote: the cell runs on past this line over 2 lines that read as rows of their own (only "
	       "this line is rejected)|1,\"5 inch,x\n3:{\"id\":\"2\",\"v\":\"b\",\"w\":\"x\"}\n"
	       "5:{\"id\":\"3\",\"v\":\"c\",\"w\":\"x\"}\n6:{\"id\":\"4\",\"v\":\"12\\\"\",\"w\":\"x\"}\n");
	expect("the same with CR alone, no line break at the end", "inch.csv", "id,v\r1,\"5 inch\r2,b\r3,c\r4,12\"", &o,
	       "2!unterminated quote: the cell runs on past this line over 2 lines that read as rows of their own (only "
	       "this line is rejected)|1,\"5 inch\n3:{\"id\":\"2\",\"v\":\"b\"}\n4:{\"id\":\"3\",\"v\":\"c\"}\n"
	       "5:{\"id\":\"4\",\"v\":\"12\\\"\"}\n");
	expect("TSV: lines between read as rows by their tabs, not their commas", "inch.tsv",
	       "id\tv\n1\t\"5 inch\n2\tb\n3\tc\n4\t12\"\n5\t\"a\nx,y\nx,y\nz\"\n", &o,
	       "2!unterminated quote: the cell runs on past this line over 2 lines that read as rows of their own (only "
	       "this line is rejected)|1\t\"5 inch\n3:{\"id\":\"2\",\"v\":\"b\"}\n4:{\"id\":\"3\",\"v\":\"c\"}\n"
	       "5:{\"id\":\"4\",\"v\":\"12\\\"\"}\n6:{\"id\":\"5\",\"v\":\"a\\nx,y\\nx,y\\nz\"}\n");
	expect("legitimate line breaks in quotes stay data: an address over two lines, one line between that reads as a "
	       "row (and a blank one), lines between that do not all (a delimiter more or fewer, a doubled quote, blank ones)", "a.csv",
	       "id,v\n1,\"12 Main St\nSpringfield, IL\"\n2,\"a\nb,c\nd\"\n3,\"a\nb,c\nno comma\nd\"\n"
	       "4,\"a\nb,c,d\nb,c\nd\"\n5,\"a\nb,\"\"c\"\"\nb,c\nd\"\n6,\"a\n\nb\n\nc\"\n7,\"a\nb,c\n\nd\"\n", &o,
	       "2:{\"id\":\"1\",\"v\":\"12 Main St\\nSpringfield, IL\"}\n4:{\"id\":\"2\",\"v\":\"a\\nb,c\\nd\"}\n"
	       "7:{\"id\":\"3\",\"v\":\"a\\nb,c\\nno comma\\nd\"}\n11:{\"id\":\"4\",\"v\":\"a\\nb,c,d\\nb,c\\nd\"}\n"
	       "15:{\"id\":\"5\",\"v\":\"a\\nb,\\\"c\\\"\\nb,c\\nd\"}\n19:{\"id\":\"6\",\"v\":\"a\\n\\nb\\n\\nc\"}\n"
	       "24:{\"id\":\"7\",\"v\":\"a\\nb,c\\n\\nd\"}\n");
	/* A stray quote closed lines later, the lines between not all rows: three in four are enough. */
	expect("a stray quote closed by a later one over rows one of which is of another width: the rows go up",
	       "inch.csv", "id,name,qty\nu1,\"5 inch,1\nu2,b,2\nu3,c,3\nu4,c,3,x\nu5,d,4\nu6,e 12\",5\nu7,f,6\n", &o,
	       "2!unterminated quote: the cell runs on past this line over 3 lines that read as rows of their own (only "
	       "this line is rejected)|u1,\"5 inch,1\n3:{\"id\":\"u2\",\"name\":\"b\",\"qty\":\"2\"}\n"
	       "4:{\"id\":\"u3\",\"name\":\"c\",\"qty\":\"3\"}\n5!4 cell(s), the header has 3|u4,c,3,x\n"
	       "6:{\"id\":\"u5\",\"name\":\"d\",\"qty\":\"4\"}\n7:{\"id\":\"u6\",\"name\":\"e 12\\\"\",\"qty\":\"5\"}\n"
	       "8:{\"id\":\"u7\",\"name\":\"f\",\"qty\":\"6\"}\n");
	expect("the same with a short row between", "inch.csv",
	       "id,name,qty\nu1,\"5 inch,1\nu2,b,2\nu3,c,3\nu4,c\nu5,d,4\nu6,e 12\",5\n", &o,
	       "2!unterminated quote: the cell runs on past this line over 3 lines that read as rows of their own (only "
	       "this line is rejected)|u1,\"5 inch,1\n3:{\"id\":\"u2\",\"name\":\"b\",\"qty\":\"2\"}\n"
	       "4:{\"id\":\"u3\",\"name\":\"c\",\"qty\":\"3\"}\n5!2 cell(s), the header has 3|u4,c\n"
	       "6:{\"id\":\"u5\",\"name\":\"d\",\"qty\":\"4\"}\n7:{\"id\":\"u6\",\"name\":\"e 12\\\"\",\"qty\":\"5\"}\n");
	expect("the same with doubled quotes in a row between (inside the stray cell, escaped quotes)", "inch.csv",
	       "id,name,qty\nu1,\"5 inch,1\nu2,b,2\nu3,c,3\nu4,\"\"c\"\",3\nu5,d,4\nu6,e 12\",5\n", &o,
	       "2!unterminated quote: the cell runs on past this line over 3 lines that read as rows of their own (only "
	       "this line is rejected)|u1,\"5 inch,1\n3:{\"id\":\"u2\",\"name\":\"b\",\"qty\":\"2\"}\n"
	       "4:{\"id\":\"u3\",\"name\":\"c\",\"qty\":\"3\"}\n"
	       "5!text after a closing quote (a quote inside a quoted cell must be doubled)|u4,\"\"c\"\",3\n"
	       "6:{\"id\":\"u5\",\"name\":\"d\",\"qty\":\"4\"}\n7:{\"id\":\"u6\",\"name\":\"e 12\\\"\",\"qty\":\"5\"}\n");
	expect("a quoted cell in a row between closes the stray cell: no row, its line alone rejected", "inch.csv",
	       "id,name,qty\nu1,\"5 inch,1\nu2,b,2\nu3,c,3\nu4,\"c, d\",3\nu5,d,4\nu6,e 12\",5\n", &o,
	       "2!" CSV_QUOTE_NOT_A_ROW "|u1,\"5 inch,1\n3:{\"id\":\"u2\",\"name\":\"b\",\"qty\":\"2\"}\n"
	       "4:{\"id\":\"u3\",\"name\":\"c\",\"qty\":\"3\"}\n5:{\"id\":\"u4\",\"name\":\"c, d\",\"qty\":\"3\"}\n"
	       "6:{\"id\":\"u5\",\"name\":\"d\",\"qty\":\"4\"}\n7:{\"id\":\"u6\",\"name\":\"e 12\\\"\",\"qty\":\"5\"}\n");
	expect("rows with empty cells between (one quoted): three in four read as rows",
	       "inch.csv", "id,name,qty\nu1,\"5 inch,1\nu2,,2\nu3,c,3\nu4,c,3,x\nu5,\"\",4\nu6,e 12\",5\n", &o,
	       "2!unterminated quote: the cell runs on past this line over 3 lines that read as rows of their own (only "
	       "this line is rejected)|u1,\"5 inch,1\n3:{\"id\":\"u2\",\"qty\":\"2\"}\n"
	       "4:{\"id\":\"u3\",\"name\":\"c\",\"qty\":\"3\"}\n5!4 cell(s), the header has 3|u4,c,3,x\n"
	       "6:{\"id\":\"u5\",\"name\":\"\",\"qty\":\"4\"}\n7:{\"id\":\"u6\",\"name\":\"e 12\\\"\",\"qty\":\"5\"}\n");
	expect("an odd row between with CR alone", "inch.csv",
	       "id,name,qty\ru1,\"5 inch,1\ru2,b,2\ru3,c,3\ru4,c,3,x\ru5,d,4\ru6,e 12\",5\r", &o,
	       "2!unterminated quote: the cell runs on past this line over 3 lines that read as rows of their own (only "
	       "this line is rejected)|u1,\"5 inch,1\n3:{\"id\":\"u2\",\"name\":\"b\",\"qty\":\"2\"}\n"
	       "4:{\"id\":\"u3\",\"name\":\"c\",\"qty\":\"3\"}\n5!4 cell(s), the header has 3|u4,c,3,x\n"
	       "6:{\"id\":\"u5\",\"name\":\"d\",\"qty\":\"4\"}\n7:{\"id\":\"u6\",\"name\":\"e 12\\\"\",\"qty\":\"5\"}\n");
	expect("an odd row between in TSV (by its tabs)", "inch.tsv",
	       "id\tname\tqty\nu1\t\"5 inch\t1\nu2\tb\t2\nu3\tc,x\t3\nu4\tc\nu5\td\t4\nu6\te 12\"\t5\n", &o,
	       "2!unterminated quote: the cell runs on past this line over 3 lines that read as rows of their own (only "
	       "this line is rejected)|u1\t\"5 inch\t1\n3:{\"id\":\"u2\",\"name\":\"b\",\"qty\":\"2\"}\n"
	       "4:{\"id\":\"u3\",\"name\":\"c,x\",\"qty\":\"3\"}\n5!2 cell(s), the header has 3|u4\tc\n"
	       "6:{\"id\":\"u5\",\"name\":\"d\",\"qty\":\"4\"}\n7:{\"id\":\"u6\",\"name\":\"e 12\\\"\",\"qty\":\"5\"}\n");
	expect("a stray quote closed two lines on, the closing quote inside a row's cell: the row between goes up",
	       "inch.csv", "id,name,qty\nu1,\"5 inch,1\nu2,b,2\nu3,e 12\",5\nu4,f,6\n", &o,
	       "2!unterminated quote: the cell runs on past this line over 1 lines that read as rows of their own (only "
	       "this line is rejected)|u1,\"5 inch,1\n3:{\"id\":\"u2\",\"name\":\"b\",\"qty\":\"2\"}\n"
	       "4:{\"id\":\"u3\",\"name\":\"e 12\\\"\",\"qty\":\"5\"}\n5:{\"id\":\"u4\",\"name\":\"f\",\"qty\":\"6\"}\n");
	expect("the same with CRLF and a quoted cell after the closing one", "inch.csv",
	       "id,name,qty\r\nu1,\"5 inch,1\r\nu2,b,2\r\nu3,e 12\",\"5\"\r\n", &o,
	       "2!unterminated quote: the cell runs on past this line over 1 lines that read as rows of their own (only "
	       "this line is rejected)|u1,\"5 inch,1\n3:{\"id\":\"u2\",\"name\":\"b\",\"qty\":\"2\"}\n"
	       "4:{\"id\":\"u3\",\"name\":\"e 12\\\"\",\"qty\":\"5\"}\n");
	expect("legitimate cells stay one: a two-line address, a note of prose lines (one of the header's width), "
	       "doubled quotes, a last column's cell whose lines read as rows, a list two lines in three of which do, "
	       "a letter (its first line no row)", "a.csv",
	       "id,name,qty\nu1,\"12 Main St\nSpringfield, IL\",5\n"
	       "u2,\"Called Monday.\nLeft a message, no answer.\nWill try again Friday, 10am, or Monday.\nThanks\",3\n"
	       "u3,\"He said \"\"5 inch\"\", twice\nthen, \"\"12 inch\"\", once\nok\",7\nu4,x,\"sizes:\nS,M,L\nXL,XXL,3XL\"\n"
	       "u5,\"Items:\nbolts, 5 mm, zinc\nnuts, 5 mm, brass\nwashers and spacers\nend\",1\n"
	       "u6,\"Dear Ann\nthanks, we got it, all fine\nregards, Bob\",2\n", &o,
	       "2:{\"id\":\"u1\",\"name\":\"12 Main St\\nSpringfield, IL\",\"qty\":\"5\"}\n"
	       "4:{\"id\":\"u2\",\"name\":\"Called Monday.\\nLeft a message, no answer.\\nWill try again Friday, 10am, or "
	       "Monday.\\nThanks\",\"qty\":\"3\"}\n"
	       "8:{\"id\":\"u3\",\"name\":\"He said \\\"5 inch\\\", twice\\nthen, \\\"12 inch\\\", once\\nok\",\"qty\":\"7\"}\n"
	       "11:{\"id\":\"u4\",\"name\":\"x\",\"qty\":\"sizes:\\nS,M,L\\nXL,XXL,3XL\"}\n"
	       "14:{\"id\":\"u5\",\"name\":\"Items:\\nbolts, 5 mm, zinc\\nnuts, 5 mm, brass\\nwashers and spacers\\nend\","
	       "\"qty\":\"1\"}\n"
	       "19:{\"id\":\"u6\",\"name\":\"Dear Ann\\nthanks, we got it, all fine\\nregards, Bob\",\"qty\":\"2\"}\n");
	expect("a quoted line break in a row of the header's width is data (CR alone too); lines are counted", "a.csv",
	       "id,v\r1,\"a\rb\r\nc\nd\"\r2,x,y\r3,c\r", &o,
	       "2:{\"id\":\"1\",\"v\":\"a\\rb\\r\\nc\\nd\"}\n6!3 cell(s), the header has 2|2,x,y\n"
	       "7:{\"id\":\"3\",\"v\":\"c\"}\n");
	expect("invalid UTF-8 in a string cell is rejected; control characters are escaped", "a.csv",
	       "id,v\n1,\xC3\x28\n2,\x01\t\n", &o, "2!cell 2 (v): invalid UTF-8|1,\xC3\x28\n3:{\"id\":\"2\",\"v\":\"\\u0001\\t\"}\n");
	expect("a quote inside an unquoted cell is a character", "a.csv", "id,v\n1,5\"7\n", &o,
	       "2:{\"id\":\"1\",\"v\":\"5\\\"7\"}\n");
	record_csv_options_release(&o);
}

static void csv_types(void)
{
	struct csv_options o = opts("id:integer, score:number,ok:boolean tags:json", CSV_EMPTY_OMIT);

	expect("typed cells are sent as written: big integers, exponents, booleans, JSON values", "a.csv",
	       "id,score,ok,tags\n123456789012345678901234567890,-1.50e+3,true,\"[1,{\"\"a\"\":null}]\"\n", &o,
	       "2:{\"id\":123456789012345678901234567890,\"score\":-1.50e+3,\"ok\":true,\"tags\":[1,{\"a\":null}]}\n");
	expect("a cell not of its column's type is rejected, naming the cell", "a.csv",
	       "id,score,ok,tags\n01,1,true,1\n1,1.,true,1\n1,1,yes,1\n1,1,true,\"1,\"\"x\"\":2\"\n2,0,false,{}\n", &o,
	       "2!cell 1 (id): '01' is not an integer|01,1,true,1\n"
	       "3!cell 2 (score): '1.' is not a number|1,1.,true,1\n"
	       "4!cell 3 (ok): 'yes' is not true or false|1,1,yes,1\n"
	       "5!cell 4 (tags): '1,\"x\":2' is not a JSON value|1,1,true,\"1,\"\"x\"\":2\"\n"
	       "6:{\"id\":2,\"score\":0,\"ok\":false,\"tags\":{}}\n");
	expect("csv_empty = omit leaves empty cells out", "a.csv", "id,score,ok,tags\n1,,,\n", &o, "2:{\"id\":1}\n");
	o.empty = CSV_EMPTY_NULL;
	expect("csv_empty = null", "a.csv", "id,score,ok,tags,s\n1,,,,\n", &o,
	       "2:{\"id\":1,\"score\":null,\"ok\":null,\"tags\":null,\"s\":null}\n");
	o.empty = CSV_EMPTY_STRING;
	expect("csv_empty = string: \"\" for strings, null for typed columns", "a.csv", "id,score,s\n1,,\n", &o,
	       "2:{\"id\":1,\"score\":null,\"s\":\"\"}\n");
	o.empty = CSV_EMPTY_OMIT;
	expect("a quoted \"\" is an empty string, whatever csv_empty says", "a.csv", "id,s\n1,\"\"\n", &o,
	       "2:{\"id\":1,\"s\":\"\"}\n");
	record_csv_options_release(&o);
}

static void csv_header_errors(void)
{
	struct csv_options o = opts(NULL, CSV_EMPTY_OMIT);
	static const struct {
		const char *csv, *err;
	} cases[] = {
		{ "name,v\n1,2\n", "header: no column 'id' (the connection's primary_key)" },
		{ "id,,v\n1,2,3\n", "header: column 2 has an empty name" },
		{ "id,v,v\n1,2,3\n", "header: column 'v' appears twice" },
		{ "id,\"v\nx\"\"\n", "header: unterminated quote: the cell runs to the end of the file" },
	};
	struct got g;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		read_all("h.csv", cases[i].csv, strlen(cases[i].csv), &o, 0, 1, &g);
		if (!ok(g.rc == -EBADMSG && !strcmp(g.err, cases[i].err), "refused header: %s", cases[i].err))
			diag("rc %d err '%s'", g.rc, g.err);
	}
	read_all("e.csv", "", 0, &o, 0, 1, &g);
	ok(g.rc == 0 && !g.text[0], "an empty CSV file holds no records (and no header is needed)");
	read_all("e.csv", "id\n", 3, &o, 0, 1, &g);
	ok(g.rc == 0 && !g.text[0], "a header alone holds no records");
	record_csv_options_release(&o);
}

static void csv_resume_unget_long(void)
{
	struct csv_options o = opts(NULL, CSV_EMPTY_OMIT);
	const char *csv = "id,v\n1,a\n2,\"b\nb\"\n3,c\n";
	struct source *s = NULL;
	struct ndjson_line ln, again;
	char big[MAX_RECORD * 3], want[1024];
	size_t used, rows, n;
	struct got g;
	int fd = memfile(csv, strlen(csv));
	off_t off3;

	ok(record_source_open(&s, fd, "r.csv", &o, 0, 1, &LIMITS) == 0 && record_source_next(s, &ln) == 1 && ln.start_offset == 5 &&
	   ln.end_offset == 9, "offsets are the file's: row 1 at 5..9");
	ok(record_source_next(s, &ln) == 1 && ln.lineno == 3 && record_source_offset(s) == 17 && record_source_lineno(s) == 5,
	   "after a row over two lines, the next starts at line 5, offset 17");
	off3 = record_source_offset(s);
	ok(record_source_next(s, &ln) == 1, "row 3");
	record_source_unget(s);
	ok(record_source_offset(s) == off3 && record_source_lineno(s) == 5 && record_source_next(s, &again) == 1 && again.data == ln.data &&
	   again.len == ln.len, "unget hands the last row back, offset and line with it");
	record_source_free(s);
	close(fd);
	read_all("r.csv", csv, strlen(csv), &o, off3, 5, &g);
	ok(g.rc == 0 && !strcmp(g.text, "5:{\"id\":\"3\",\"v\":\"c\"}\n"), "opened at a row's offset: the header is read "
	   "again, then the rows from there");
	read_all("r.csv", csv, strlen(csv), &o, 2, 1, &g);
	ok(g.rc == -EBADMSG && strstr(g.err, "inside the header"), "an offset inside the header is refused");

	memset(big, 'x', sizeof(big));
	memcpy(big, "id,v\n1,\"", 8);
	memcpy(big + sizeof(big) - 11, "\"\n2,\"ok\"\n\n\n", 11);
	read_all("l.csv", big, sizeof(big), &o, 0, 1, &g);
	snprintf(want, sizeof(want), "2!row longer than max_record_bytes (%zu bytes; the first 256 kept)|%.256s\n"
		 "3:{\"id\":\"2\",\"v\":\"ok\"}\n", sizeof(big) - 14, big + 5);
	if (!ok(g.rc == 0 && !strcmp(g.text, want),
	   "a row longer than max_record_bytes is reported with its first bytes, and the next is read"))
		diag("rc %d err %s got %.400s", g.rc, g.err, g.text);

	/* A stray quote in row 2 of many: past max_record_bytes, its line alone is rejected, every row after goes up. */
	static const char head[] = "2!" CSV_QUOTE_TOO_LONG "|1,\"5 inch\n3:{\"id\":\"2\",\"v\":\"x\"}\n";
	used = (size_t)snprintf(big, sizeof(big), "id,v\n1,\"5 inch\n");
	for (rows = 0; used < sizeof(big) - 32; rows++)
		used += (size_t)snprintf(big + used, sizeof(big) - used, "%zu,x\n", rows + 2);
	read_all("q.csv", big, used, &o, 0, 1, &g);
	n = 0;
	for (const char *p = g.text; (p = strchr(p, '\n')); p++)
		n++;
	if (!ok(g.rc == 0 && !strncmp(g.text, head, strlen(head)) &&
		n == rows + 1,
		"a stray quote running past max_record_bytes: its line is rejected with its text, the %zu rows after go up", rows))
		diag("rc %d err %s n %zu got %.400s", g.rc, g.err, n, g.text);
	record_csv_options_release(&o);
}

static void compressed(void)
{
	static char plain[200000];
	static unsigned char gz[300000], gz2[600000], zs[300000];
	struct csv_options o = opts("id:integer", CSV_EMPTY_OMIT);
	struct got want, g;
	size_t n = 0, gzn, zsn;

	for (int i = 1; i <= 1500; i++)
		n += (size_t)snprintf(plain + n, sizeof(plain) - n, "{\"id\":%d,\"v\":\"%020d\"}\n", i, i * 7);
	gzn = gzip_of(plain, n, gz, sizeof(gz));
	zsn = ZSTD_compress(zs, sizeof(zs), plain, n, 3);
	if (ZSTD_isError(zsn))
		abort();

	read_all("p.ndjson", plain, n, NULL, 0, 1, &want);
	read_all("p.ndjson.gz", gz, gzn, NULL, 0, 1, &g);
	ok(g.rc == 0 && !strcmp(g.text, want.text), "gzip: the same lines as the plain file");
	read_all("p.ndjson.zst", zs, zsn, NULL, 0, 1, &g);
	ok(g.rc == 0 && !strcmp(g.text, want.text), "zstd: the same lines as the plain file");

	/* Two members (cat a.gz b.gz), as gzip -d reads them. */
	memcpy(gz2, gz, gzn);
	memcpy(gz2 + gzn, gz, gzn);
	read_all("p.ndjson.gz", gz2, 2 * gzn, NULL, 0, 1, &g);
	ok(g.rc == 0 && strlen(g.text) > strlen(want.text) && !strncmp(g.text, want.text, strlen(want.text)),
	   "gzip: a second member is read on");

	read_all("p.ndjson.gz", gz, gzn - 9, NULL, 0, 1, &g);
	ok(g.rc == -EBADMSG && strstr(g.err, "gzip data ends early at byte") && strstr(g.err, "truncated"),
	   "gzip cut short: an error naming the offset, never a clean end (%s)", g.err);
	read_all("p.ndjson.zst", zs, zsn - 5, NULL, 0, 1, &g);
	ok(g.rc == -EBADMSG && strstr(g.err, "zstd data ends early at byte"), "zstd cut short: %s", g.err);
	memcpy(gz2, gz, gzn);
	for (size_t i = gzn / 2; i < gzn / 2 + 16; i++)
		gz2[i] ^= 0x55;
	read_all("p.ndjson.gz", gz2, gzn, NULL, 0, 1, &g);
	ok(g.rc == -EBADMSG && strstr(g.err, "gzip data is corrupt at byte"), "gzip corrupt: %s", g.err);
	memcpy(gz2, gz, gzn);
	memcpy(gz2 + gzn, "garbage", 7);
	read_all("p.ndjson.gz", gz2, gzn + 7, NULL, 0, 1, &g);
	ok(g.rc == -EBADMSG && strstr(g.err, "corrupt"), "gzip followed by garbage: %s", g.err);
	read_all("p.ndjson.gz", plain, n, NULL, 0, 1, &g);
	ok(g.rc == -EBADMSG && strstr(g.err, "corrupt at byte") && strstr(g.err, "incorrect header check"), "a plain file named .gz: %s", g.err);
	read_all("p.ndjson.zst", "", 0, NULL, 0, 1, &g);
	ok(g.rc == -EBADMSG && strstr(g.err, "no compressed data"), "an empty .zst: %s", g.err);

	/* Entered in the middle: offsets are those of the decompressed bytes. */
	{
		const char *line1001 = strstr(plain, "{\"id\":1001,");
		off_t off = line1001 - plain;

		read_all("p.ndjson.gz", gz, gzn, NULL, off, 1001, &g);
		ok(g.rc == 0 && !strcmp(g.text, strstr(want.text, "\n1001:") + 1),
		   "gzip opened at a decompressed offset: the lines from there");
		read_all("p.ndjson.zst", zs, zsn, NULL, off, 1001, &g);
		ok(g.rc == 0 && !strcmp(g.text, strstr(want.text, "\n1001:") + 1), "zstd the same");
		read_all("p.ndjson.gz", gz, gzn, NULL, (off_t)n + 10, 1, &g);
		ok(g.rc == -EBADMSG, "an offset beyond the decompressed end is refused (%s)", g.err);
	}

	/* CSV, gzipped */
	n = (size_t)snprintf(plain, sizeof(plain), "id,v\n1,a\n2,b\n");
	gzn = gzip_of(plain, n, gz, sizeof(gz));
	read_all("c.csv.gz", gz, gzn, &o, 0, 1, &g);
	ok(g.rc == 0 && !strcmp(g.text, "2:{\"id\":1,\"v\":\"a\"}\n3:{\"id\":2,\"v\":\"b\"}\n"), "csv.gz");
	read_all("c.csv.gz", gz, gzn, &o, 9, 3, &g);
	ok(g.rc == 0 && !strcmp(g.text, "3:{\"id\":2,\"v\":\"b\"}\n"), "csv.gz opened at a row's offset");
	read_all("c.csv.gz", gz, gzn - 4, &o, 0, 1, &g);
	ok(g.rc == -EBADMSG && strstr(g.err, "ends early"), "csv.gz cut short: %s", g.err);
	record_csv_options_release(&o);
}

static void columns_spec(void)
{
	struct csv_options o = { 0 };
	char err[256];

	ok(record_csv_columns_parse(&o, "a:integer,b:number  c:boolean,\td:json , e:string", err, sizeof(err)) == 0 &&
	   o.n_columns == 5 && o.columns[3].type == CSV_JSON, "csv_columns: commas or blanks between items");
	ok(record_csv_columns_parse(&o, "f:float", err, sizeof(err)) == -EINVAL && strstr(err, "unknown type 'float'"),
	   "an unknown type: %s", err);
	ok(record_csv_columns_parse(&o, "a:integer", err, sizeof(err)) == -EINVAL && strstr(err, "given twice"),
	   "a column given twice: %s", err);
	ok(record_csv_columns_parse(&o, "g", err, sizeof(err)) == -EINVAL && strstr(err, "NAME:TYPE"), "no type: %s", err);
	record_csv_options_release(&o);
}

/* What the journal keeps of the CSV options: any change that cuts rows another way shows. */
static void options_hash(void)
{
	struct csv_options a = opts("id:integer", CSV_EMPTY_OMIT), b = opts("id:integer", CSV_EMPTY_OMIT);
	struct csv_options c = opts("id:string", CSV_EMPTY_OMIT), d = opts("id:integer v:json", CSV_EMPTY_OMIT);
	struct csv_options e = opts("idv:integer", CSV_EMPTY_OMIT), none = opts(NULL, CSV_EMPTY_OMIT);
	uint64_t h = record_csv_options_hash(&a);

	ok(h && h == record_csv_options_hash(&b), "options hash: the same options, the same hash (never 0)");
	ok(h != record_csv_options_hash(&c) && h != record_csv_options_hash(&d) && h != record_csv_options_hash(&e) &&
	   h != record_csv_options_hash(&none), "options hash: another type, another column, another name, none");
	b.empty = CSV_EMPTY_NULL;
	ok(h != record_csv_options_hash(&b), "options hash: csv_empty");
	b.empty = CSV_EMPTY_OMIT;
	b.delimiter = ';';
	ok(h != record_csv_options_hash(&b), "options hash: csv_delimiter");
	record_csv_options_release(&a);
	record_csv_options_release(&b);
	record_csv_options_release(&c);
	record_csv_options_release(&d);
	record_csv_options_release(&e);
	record_csv_options_release(&none);
}

/* The cell of row @s at @i is @want (its bytes as written, doubled quotes kept) with these flags. */
static bool cell_is(const struct csv_scan *s, size_t i, const char *want, bool quoted, bool dq)
{
	const struct csv_cell *c = &s->cells[i];

	return i < s->n_cells && c->len == strlen(want) && !memcmp(s->buf + s->start + c->off, want, c->len) &&
	       c->quoted == quoted && c->dq == dq;
}

/* csv_scan alone: cells as offsets into its buffer, quoting, CRLF, blank and bad rows, seek, too long. */
static void scan_rows(void)
{
	static const char text[] = "a,\"b\"\"c\",\r\n\n\"x\ny\",z\n\"q\"w,1";
	struct record_stream *in = NULL;
	struct csv_scan s;
	off_t third;
	int fd = memfile(text, sizeof(text) - 1);

	if (record_decompress_new(&in) < 0 || record_decompress_open(in, fd, COMPRESSION_NONE) < 0 || record_csv_scan_init(&s, 64) < 0)
		abort();
	record_csv_scan_reset(&s, in, ',');
	ok(record_csv_scan_row(&s) == 1 && s.n_cells == 3 && cell_is(&s, 0, "a", false, false) &&
	   cell_is(&s, 1, "b\"\"c", true, true) && cell_is(&s, 2, "", false, false) && !s.bad && s.row_offset == 0,
	   "scan: a row of three cells, a doubled quote kept for the reader to undo, CR before LF not in the cell");
	s.start = s.pos;
	ok(record_csv_scan_row(&s) == 1 && record_csv_scan_blank(&s) && s.row_offset == 11, "scan: a blank line is one empty cell");
	s.start = s.pos;
	third = s.buf_offset + (off_t)s.start;
	ok(record_csv_scan_row(&s) == 1 && s.n_cells == 2 && cell_is(&s, 0, "x\ny", true, false) && s.row_nl == 1 &&
	   cell_is(&s, 1, "z", false, false), "scan: a line break inside quotes, counted in row_nl");
	s.start = s.pos;
	ok(record_csv_scan_row(&s) == 1 && s.n_cells == 2 && s.bad && strstr(s.bad, "text after a closing quote") &&
	   cell_is(&s, 1, "1", false, false), "scan: text after a closing quote spoils the row; the end ends it");
	s.start = s.pos;
	ok(record_csv_scan_row(&s) == 0, "scan: 0 at the end");
	record_csv_scan_reset(&s, in, ',');
	ok(lseek(fd, 0, SEEK_SET) == 0 && record_decompress_open(in, fd, COMPRESSION_NONE) == 0 && record_csv_scan_seek(&s, third) == 0 &&
	   record_csv_scan_row(&s) == 1 && cell_is(&s, 0, "x\ny", true, false) && s.row_offset == third,
	   "scan: seek goes on at a row's offset");
	record_csv_scan_release(&s);
	close(fd);

	fd = memfile("0123456789,0123456789\nok\n", 25);
	if (record_csv_scan_init(&s, 8) < 0 || lseek(fd, 0, SEEK_SET) != 0 || record_decompress_open(in, fd, COMPRESSION_NONE) < 0)
		abort();
	record_csv_scan_reset(&s, in, ',');
	ok(record_csv_scan_row(&s) == 1 && s.skipping, "scan: a row longer than max_record_bytes is scanned on, not kept");
	s.start = s.pos;
	ok(record_csv_scan_row(&s) == 1 && !s.skipping && cell_is(&s, 0, "ok", false, false), "scan: the next row is whole");
	record_csv_scan_release(&s);
	record_decompress_free(in);
	close(fd);
}

int main(void)
{
	scan_rows();
	csv_rows();
	csv_types();
	csv_header_errors();
	csv_resume_unget_long();
	compressed();
	columns_spec();
	options_hash();
	return done_testing();
}
