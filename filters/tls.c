/*
 * tls: TLS 1.2 and 1.3 with OpenSSL 3.
 *
 * OpenSSL talks to the stream through a BIO of our own over the engine's
 * buffers: it reads records straight from the layer's input (src) and
 * writes records straight into the buffer below the layer
 * (strata_layer_below()), so no byte goes through a memory BIO on the way.
 * Application data is decrypted into space reserved in dst and encrypted
 * from the user's evbuffer memory.
 *
 * The BIO hands OpenSSL whole records only: a partial record stays in src,
 * where the engine sees it (truncation at EOF is reported as such), and
 * each record read is decrypted whole into dst, so no plaintext is parked
 * inside OpenSSL where nothing would run it again (DESIGN trap 3).
 *
 * The handshake starts by itself (start hook for clients, first input for
 * servers); BEV_EVENT_CONNECTED waits for it (STRATA_FILTER_GATES_CONNECT);
 * output written before is held and sent once it is done. BEV_FINISHED on
 * output sends close_notify; the peer's close_notify is the end of the
 * input; a transport EOF without it is an error unless dirty=allow.
 *
 * Options: role, cert, key, ca, verify, name, sni, pin, alpn, min, max,
 * ciphers, ciphersuites, groups, dirty, handshake-timeout, resume,
 * tickets, keylog. One SSL_CTX is made per stack string (config), shared
 * by every connection of a listener.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <event2/event.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "internal.h"

#define TLS_NAME "tls"
/* Largest plaintext of one record, and of its ciphertext (RFC 8446 5.2,
 * RFC 5246 6.2.3). */
#define TLS_PLAIN_MAX 16384
#define TLS_CIPHER_MAX (16384 + 2048)
#define TLS_HEADER 5
/* Bytes a record adds to its plaintext, at most, with the suites we
 * allow (CBC with SHA-384 and padding: 5 + 16 + 48 + 16). */
#define TLS_REC_OVERHEAD 96
#define TLS_HS_TIMEOUT_MS 10000
#define TLS_MAX_PAIRS 8
#define TLS_MAX_PINS 8
#define TLS_TICKET_KEY_LEN 80
#define TLS_MAX_TICKET_KEYS 16
#define TLS_CACHE_SLOTS 256
#define TLS_CACHE_KEY 320
/* verify=optional has a meaning only for servers. */
#define TLS_CLIENT_OPTIONAL "bad value 'optional' for verify: a client " \
	"takes required (the default) or none; optional is for servers " \
	"(ask for a client certificate, accept a connection without one)"

/* Forward secrecy only, AEAD only, for TLS 1.2 (Mozilla's intermediate
 * list without DHE, which needs parameters of its own). */
static const char tls_default_ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

enum tls_verify { VERIFY_DEFAULT = -1, VERIFY_NONE, VERIFY_OPTIONAL,
	VERIFY_REQUIRED };

struct tls_pair {
	X509 *cert;
	EVP_PKEY *key;
	STACK_OF(X509) *chain;
};

struct tls_ticket_key {
	unsigned char name[16];
	unsigned char hmac[32];
	unsigned char aes[32];
};

struct tls_cfg {
	SSL_CTX *ctx;
	int role;		/* -1: the stack's role */
	int verify;		/* enum tls_verify */
	int dirty_allow;
	int resume;
	int sni_off;
	int has_ca;
	uint64_t hs_timeout_ms;
	char *name, *sni;
	unsigned char pins[TLS_MAX_PINS][32];
	size_t npins;
	unsigned char *alpn;	/* wire format: length-prefixed names */
	size_t alpn_len;
	struct tls_pair pairs[TLS_MAX_PAIRS];
	size_t npairs;
	struct tls_ticket_key *tkeys;
	size_t ntkeys;
	int keylog_fd;
	char id[17];		/* hex prefix of the options' hash */
	/* the system CA store, loaded by the first connection that
	 * verifies against it (a server that asks for no client
	 * certificate never does): 200 KB and 240 M instructions saved */
	pthread_mutex_t store_lock;
	int store_loaded;
};

/*
 * One connection. Kept small, because an idle server holds thousands:
 * what only the handshake needs (its timer, why verification failed) is
 * allocated for it and freed when it ends, and statistics are read from
 * the SSL object when asked for, not kept as text.
 */
struct tls {
	const struct tls_cfg *cfg;
	struct strata_layer *layer;
	SSL *ssl;		/* its BIO's data is this struct */
	struct event *timer;	/* handshake timeout; freed once done */
	struct evbuffer *rsrc;	/* the input side's src, during a call */
	size_t rec_left;	/* bytes of the current record not yet read */
	struct timeval t0;
	long hs_us;
	char *cache_key;	/* clients that resume: the cache's key */
	char *verr;		/* why verification failed, once it did */
	unsigned server : 1;
	unsigned started : 1;
	unsigned done : 1;
	unsigned got_close : 1;
	unsigned sent_close : 1;
	unsigned fin_pending : 1;
	unsigned failed : 1;
	unsigned wrote : 1;
};

static const struct strata_option_doc tls_options[] = {
	{"role", "", "client or server (default: the stack's direction)"},
	{"cert", "", "PEM certificate chain file(s), ';'-separated, or "
		     "self-signed"},
	{"key", "", "PEM private key file(s) (default: in the cert file)"},
	{"ca", "", "CA file or directory (default: the system store)"},
	{"verify", "", "none, optional or required (clients: required; "
		       "servers: none)"},
	{"name", "", "name the peer's certificate must carry"},
	{"sni", "", "server name sent by a client, or none"},
	{"pin", "", "sha256:<hex or base64> of the peer's public key(s)"},
	{"alpn", "", "protocols, ';'-separated, e.g. h2;http/1.1"},
	{"min", "1.2", "lowest version: 1.2 or 1.3"},
	{"max", "1.3", "highest version: 1.2 or 1.3"},
	{"ciphers", "", "TLS 1.2 cipher list (OpenSSL syntax)"},
	{"ciphersuites", "", "TLS 1.3 suites, ':'-separated"},
	{"groups", "", "key exchange groups, ':'-separated"},
	{"dirty", "error", "EOF without close_notify: error or allow"},
	{"handshake-timeout", "10s", "limit for the handshake"},
	{"resume", "yes", "clients: resume sessions from the process cache"},
	{"tickets", "", "file of 80-byte ticket keys (first encrypts)"},
	{"keylog", "", "append NSS key log lines to this file"},
	{NULL, NULL, NULL},
};

/* ---- errors ---- */

/* The first OpenSSL error in the queue, as text; clears the queue. */
static const char *
tls_ossl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();
	const char *r;

	if (!e) {
		snprintf(buf, len, "unknown error");
		return buf;
	}
	r = ERR_reason_error_string(e);
	if (r)
		snprintf(buf, len, "%s", r);
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

static int
cfg_fail(struct strata_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
cfg_fail(struct strata_error *err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	strata_error_vset_(err, STRATA_ERR_OPTION, fmt, ap);
	va_end(ap);
	ERR_clear_error();
	return -1;
}

/* ---- the session cache (clients, in the process) ---- */

struct tls_cache_slot {
	char key[TLS_CACHE_KEY];
	SSL_SESSION *sess;
	uint64_t used;
};

static struct tls_cache_slot tls_cache[TLS_CACHE_SLOTS];
static uint64_t tls_cache_clock;
static pthread_mutex_t tls_cache_lock = PTHREAD_MUTEX_INITIALIZER;

/* A copy of the resumable session for @p key, or NULL. */
static SSL_SESSION *
tls_cache_get(const char *key)
{
	SSL_SESSION *s = NULL;
	size_t i;

	pthread_mutex_lock(&tls_cache_lock);
	for (i = 0; i < TLS_CACHE_SLOTS; i++) {
		struct tls_cache_slot *c = &tls_cache[i];
		if (!c->sess || strcmp(c->key, key))
			continue;
		if (SSL_SESSION_is_resumable(c->sess) &&
		    (uint64_t)SSL_SESSION_get_time(c->sess) +
			    (uint64_t)SSL_SESSION_get_timeout(c->sess) >
			(uint64_t)time(NULL)) {
			/* a copy again: the connection's end may mark the
			 * one it used not resumable */
			s = SSL_SESSION_dup(c->sess);
			c->used = ++tls_cache_clock;
		}
		break;
	}
	pthread_mutex_unlock(&tls_cache_lock);
	return s;
}

/* Keep @p sess (its reference is taken over) under @p key. */
static void
tls_cache_put(const char *key, SSL_SESSION *sess)
{
	struct tls_cache_slot *slot = NULL;
	SSL_SESSION *old;
	size_t i;

	pthread_mutex_lock(&tls_cache_lock);
	for (i = 0; i < TLS_CACHE_SLOTS; i++) {
		struct tls_cache_slot *c = &tls_cache[i];
		if (c->sess && !strcmp(c->key, key)) {
			slot = c;
			break;
		}
		if (!slot || !c->sess || (slot->sess && c->used < slot->used))
			slot = c->sess && slot && !slot->sess ? slot : c;
	}
	old = slot->sess;
	snprintf(slot->key, sizeof(slot->key), "%s", key);
	slot->sess = sess;
	slot->used = ++tls_cache_clock;
	pthread_mutex_unlock(&tls_cache_lock);
	if (old)
		SSL_SESSION_free(old);
}

/* ---- the BIO over the engine's buffers ---- */

static BIO_METHOD *tls_bio_method;
static pthread_once_t tls_bio_once = PTHREAD_ONCE_INIT;

/*
 * Is the record at the head of @p src whole? Returns its size with the
 * header, 0 if more bytes are needed, or the bytes there are if the head
 * is not a TLS record header (OpenSSL then reports what it is: an HTTP
 * request, an SSLv2 hello, garbage).
 */
static size_t
tls_record_at(struct evbuffer *src, unsigned char *type)
{
	size_t avail = evbuffer_get_length(src), rec;
	unsigned char h[TLS_HEADER];

	if (avail < TLS_HEADER)
		return 0;
	evbuffer_copyout(src, h, TLS_HEADER);
	rec = TLS_HEADER + ((size_t)h[3] << 8 | h[4]);
	*type = h[0];
	if (h[0] < 20 || h[0] > 24 || h[1] != 3 || rec > TLS_HEADER +
	    TLS_CIPHER_MAX)
		return avail;
	return avail >= rec ? rec : 0;
}

static int
tls_bio_read(BIO *b, char *out, size_t len, size_t *got)
{
	struct tls *t = BIO_get_data(b);
	struct evbuffer *src = t ? t->rsrc : NULL;
	size_t n;

	BIO_clear_retry_flags(b);
	*got = 0;
	if (!src)
		goto retry;
	if (!t->rec_left) {
		unsigned char type = 0;
		size_t rec = tls_record_at(src, &type);
		if (!rec)
			goto retry;
		t->rec_left = rec;
	}
	n = len < t->rec_left ? len : t->rec_left;
	if (n > evbuffer_get_length(src))
		n = evbuffer_get_length(src);
	if (!n)
		goto retry;
	evbuffer_remove(src, out, n);
	t->rec_left -= n;
	*got = n;
	return 1;
retry:
	BIO_set_retry_read(b);
	return 0;
}

static int
tls_bio_write(BIO *b, const char *data, size_t len, size_t *written)
{
	struct tls *t = BIO_get_data(b);

	BIO_clear_retry_flags(b);
	if (!t || evbuffer_add(strata_layer_below(t->layer), data, len) < 0)
		return 0;
	t->wrote = 1;
	*written = len;
	return 1;
}

static long
tls_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int
tls_bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void
tls_bio_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
	    "strata evbuffer");

	if (m && BIO_meth_set_read_ex(m, tls_bio_read) &&
	    BIO_meth_set_write_ex(m, tls_bio_write) &&
	    BIO_meth_set_ctrl(m, tls_bio_ctrl) &&
	    BIO_meth_set_create(m, tls_bio_create))
		tls_bio_method = m;
	else
		BIO_meth_free(m);
}

/* The connection of @p ssl: the data of its BIO. (SSL_set_app_data
 * would cost every connection an ex_data allocation.) */
static struct tls *
tls_of_ssl(const SSL *ssl)
{
	BIO *b = ssl ? SSL_get_rbio(ssl) : NULL;

	return b ? BIO_get_data(b) : NULL;
}

/* ---- certificates and keys ---- */

static void
tls_pair_clear(struct tls_pair *p)
{
	X509_free(p->cert);
	EVP_PKEY_free(p->key);
	sk_X509_pop_free(p->chain, X509_free);
	memset(p, 0, sizeof(*p));
}

/* Open @p path for reading with a message that names the file. */
static BIO *
tls_open(const char *what, const char *path, struct strata_error *err)
{
	FILE *f = fopen(path, "r");
	BIO *b;

	if (!f) {
		cfg_fail(err, "%s: cannot read '%s': %s", what, path,
		    strerror(errno));
		return NULL;
	}
	if (!(b = BIO_new_fp(f, BIO_CLOSE))) {
		fclose(f);
		cfg_fail(err, "out of memory");
	}
	return b;
}

/* The certificate chain in @p path: leaf first, then its issuers. */
static int
tls_load_chain(struct tls_pair *p, const char *path, struct strata_error *err)
{
	BIO *b = tls_open("cert", path, err);
	X509 *x;

	if (!b)
		return -1;
	p->cert = PEM_read_bio_X509(b, NULL, NULL, NULL);
	if (!p->cert) {
		BIO_free(b);
		return cfg_fail(err, "cert: no PEM certificate in '%s'", path);
	}
	if (!(p->chain = sk_X509_new_null())) {
		BIO_free(b);
		return cfg_fail(err, "out of memory");
	}
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
		if (!sk_X509_push(p->chain, x)) {
			X509_free(x);
			break;
		}
	BIO_free(b);
	ERR_clear_error(); /* the end of the file is an error to PEM */
	return 0;
}

static int
tls_load_key(struct tls_pair *p, const char *path, struct strata_error *err)
{
	BIO *b = tls_open("key", path, err);

	if (!b)
		return -1;
	p->key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	if (!p->key)
		return cfg_fail(err, "key: no PEM private key in '%s' (or it "
				     "is encrypted)", path);
	if (X509_check_private_key(p->cert, p->key) != 1)
		return cfg_fail(err, "key: the key in '%s' does not match the "
				     "certificate", path);
	return 0;
}

/* An ephemeral EC P-256 key and a certificate for localhost, 127.0.0.1
 * and ::1, valid from an hour ago for 30 days. */
static int
tls_self_signed(struct tls_pair *p, struct strata_error *err)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext = NULL;
	X509_NAME *n;
	unsigned char serial[8];
	BIGNUM *bn = NULL;
	int ok = 0;

	if (!(p->key = EVP_EC_gen("P-256")) || !(p->cert = X509_new()) ||
	    RAND_bytes(serial, sizeof(serial)) != 1)
		goto out;
	serial[0] &= 0x7f;
	if (!(bn = BN_bin2bn(serial, sizeof(serial), NULL)) ||
	    !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(p->cert)) ||
	    !X509_set_version(p->cert, 2) ||
	    !X509_gmtime_adj(X509_getm_notBefore(p->cert), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(p->cert), 30L * 86400) ||
	    !X509_set_pubkey(p->cert, p->key))
		goto out;
	n = X509_get_subject_name(p->cert);
	if (!X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
		(const unsigned char *)"strata self-signed", -1, -1, 0) ||
	    !X509_set_issuer_name(p->cert, n))
		goto out;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, p->cert, p->cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
	    "DNS:localhost,IP:127.0.0.1,IP:::1");
	if (!ext || !X509_add_ext(p->cert, ext, -1) ||
	    !X509_sign(p->cert, p->key, EVP_sha256()))
		goto out;
	ok = 1;
out:
	X509_EXTENSION_free(ext);
	BN_free(bn);
	if (!ok)
		return cfg_fail(err, "cert: could not make a self-signed "
				     "certificate");
	return 0;
}

/* Split @p s at ';' into at most @p max pieces (pointers into @p s). */
static size_t
tls_split(char *s, char **out, size_t max)
{
	size_t n = 0;
	char *save = NULL, *tok;

	for (tok = strtok_r(s, ";", &save); tok && n < max;
	    tok = strtok_r(NULL, ";", &save))
		out[n++] = tok;
	return tok ? max + 1 : n;
}

static int
tls_load_pairs(struct tls_cfg *c, const char *certs, const char *keys,
    struct strata_error *err)
{
	char *cs = strata_strdup_(certs), *ks = keys ? strata_strdup_(keys) : NULL;
	char *cv[TLS_MAX_PAIRS + 1], *kv[TLS_MAX_PAIRS + 1];
	size_t nc, nk = 0, i;
	int rc = -1;

	if (!cs || (keys && !ks)) {
		cfg_fail(err, "out of memory");
		goto out;
	}
	nc = tls_split(cs, cv, TLS_MAX_PAIRS);
	if (ks)
		nk = tls_split(ks, kv, TLS_MAX_PAIRS);
	if (!nc || nc > TLS_MAX_PAIRS || (ks && nk != nc)) {
		cfg_fail(err, "cert/key: expected 1 to %d files, as many "
			      "keys as certificates", TLS_MAX_PAIRS);
		goto out;
	}
	for (i = 0; i < nc; i++) {
		struct tls_pair *p = &c->pairs[c->npairs++];
		if (!strcmp(cv[i], "self-signed")) {
			if (ks) {
				cfg_fail(err, "key: not used with "
					      "cert=self-signed");
				goto out;
			}
			if (tls_self_signed(p, err) < 0)
				goto out;
			continue;
		}
		if (tls_load_chain(p, cv[i], err) < 0 ||
		    tls_load_key(p, ks ? kv[i] : cv[i], err) < 0)
			goto out;
	}
	if (SSL_CTX_use_cert_and_key(c->ctx, c->pairs[0].cert,
		c->pairs[0].key, c->pairs[0].chain, 1) != 1) {
		char why[120];
		cfg_fail(err, "cert: %s", tls_ossl_reason(why, sizeof(why)));
		goto out;
	}
	rc = 0;
out:
	strata_free_(cs);
	strata_free_(ks);
	return rc;
}

/* Several pairs: the server picks the one whose names match the SNI. */
static int
tls_cert_cb(SSL *ssl, void *arg)
{
	const struct tls_cfg *c = arg;
	const char *sni;
	size_t i;

	if (!SSL_is_server(ssl) ||
	    !(sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)))
		return 1;
	for (i = 1; i < c->npairs; i++)
		if (X509_check_host(c->pairs[i].cert, sni, 0, 0, NULL) == 1)
			return SSL_use_cert_and_key(ssl, c->pairs[i].cert,
			    c->pairs[i].key, c->pairs[i].chain, 1) == 1;
	return 1;
}

static int
tls_load_ca(struct tls_cfg *c, const char *ca, struct strata_error *err)
{
	struct stat st;
	char why[120];

	if (stat(ca, &st) < 0)
		return cfg_fail(err, "ca: cannot read '%s': %s", ca,
		    strerror(errno));
	if (S_ISDIR(st.st_mode)) {
		if (SSL_CTX_load_verify_dir(c->ctx, ca) != 1)
			return cfg_fail(err, "ca: cannot use directory '%s': "
					     "%s", ca,
			    tls_ossl_reason(why, sizeof(why)));
		return 0;
	}
	if (access(ca, R_OK) < 0)
		return cfg_fail(err, "ca: cannot read '%s': %s", ca,
		    strerror(errno));
	if (SSL_CTX_load_verify_file(c->ctx, ca) != 1)
		return cfg_fail(err, "ca: no PEM certificate in '%s' (%s)", ca,
		    tls_ossl_reason(why, sizeof(why)));
	/* servers asking for client certificates name the CAs they take */
	SSL_CTX_set_client_CA_list(c->ctx, SSL_load_client_CA_file(ca));
	ERR_clear_error();
	return 0;
}

/* ---- option values ---- */

static int
tls_hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* One "sha256:<64 hex digits or 44 base64 characters>" into @p out. */
static int
tls_pin_parse(const char *s, unsigned char out[32])
{
	size_t len, i;
	unsigned char tmp[48];

	if (strncmp(s, "sha256:", 7))
		return -1;
	s += 7;
	len = strlen(s);
	if (len == 64) {
		for (i = 0; i < 32; i++) {
			int hi = tls_hexval(s[2 * i]), lo = tls_hexval(s[2 * i + 1]);
			if (hi < 0 || lo < 0)
				return -1;
			out[i] = (unsigned char)(hi << 4 | lo);
		}
		return 0;
	}
	if (len != 44 || s[43] != '=' ||
	    EVP_DecodeBlock(tmp, (const unsigned char *)s, 44) != 33)
		return -1;
	memcpy(out, tmp, 32);
	return 0;
}

static int
tls_opt_pins(struct tls_cfg *c, const struct strata_option *o,
    struct strata_error *err)
{
	char *s = strata_strdup_(o->value), *v[TLS_MAX_PINS + 1];
	size_t n, i;
	int rc = 0;

	if (!s)
		return cfg_fail(err, "out of memory");
	n = tls_split(s, v, TLS_MAX_PINS);
	if (!n || n > TLS_MAX_PINS)
		rc = -1;
	for (i = 0; rc == 0 && i < n; i++)
		rc = tls_pin_parse(v[i], c->pins[i]);
	strata_free_(s);
	if (rc < 0)
		return cfg_fail(err, "bad value '%s' for pin: expected "
				     "sha256:<64 hex digits or base64>, up to "
				     "%d separated by ';'", o->value,
		    TLS_MAX_PINS);
	c->npins = n;
	return 0;
}

/* "h2;http/1.1" into ALPN's wire format. */
static int
tls_opt_alpn(struct tls_cfg *c, const struct strata_option *o,
    struct strata_error *err)
{
	size_t len = strlen(o->value), off = 0;
	const char *p = o->value, *end;

	if (!len || !(c->alpn = strata_malloc_(len + 1)))
		goto bad;
	while (*p) {
		size_t n;
		end = strchr(p, ';');
		n = end ? (size_t)(end - p) : strlen(p);
		if (!n || n > 255)
			goto bad;
		c->alpn[off++] = (unsigned char)n;
		memcpy(c->alpn + off, p, n);
		off += n;
		p += n + (end ? 1 : 0);
		if (end && !*p)
			goto bad;
	}
	c->alpn_len = off;
	return 0;
bad:
	return cfg_fail(err, "bad value '%s' for alpn: expected protocol "
			     "names of 1 to 255 bytes separated by ';'",
	    o->value);
}

static int
tls_opt_version(const struct strata_option *o, int *out,
    struct strata_error *err)
{
	static const char *const names[] = {"1.2", "1.3", "tls1.2", "tls1.3",
	    "TLSv1.2", "TLSv1.3", NULL};
	int v;

	if (strata_opt_enum(TLS_NAME, o, names, &v, err) < 0)
		return -1;
	*out = v % 2 ? TLS1_3_VERSION : TLS1_2_VERSION;
	return 0;
}

/* Each name of a ':' list must be known by itself: OpenSSL accepts a
 * list as long as one of its names is. */
static int
tls_opt_ciphers(struct tls_cfg *c, const struct strata_option *o, int v13,
    struct strata_error *err)
{
	SSL_CTX *scratch = SSL_CTX_new(TLS_method());
	char *s = strata_strdup_(o->value), *save = NULL, *tok;
	int rc = -1;

	if (!scratch || !s) {
		cfg_fail(err, "out of memory");
		goto out;
	}
	for (tok = strtok_r(s, ":", &save); tok;
	    tok = strtok_r(NULL, ":", &save)) {
		if (!v13 && strchr("!-+@", tok[0]))
			continue;
		if ((v13 ? SSL_CTX_set_ciphersuites(scratch, tok)
			 : SSL_CTX_set_cipher_list(scratch, tok)) != 1) {
			cfg_fail(err, "%s: unknown %s '%s'", o->key,
			    v13 ? "TLS 1.3 suite" : "cipher", tok);
			goto out;
		}
	}
	if ((v13 ? SSL_CTX_set_ciphersuites(c->ctx, o->value)
		 : SSL_CTX_set_cipher_list(c->ctx, o->value)) != 1) {
		cfg_fail(err, "bad value '%s' for %s: no usable cipher",
		    o->value, o->key);
		goto out;
	}
	rc = 0;
out:
	SSL_CTX_free(scratch);
	strata_free_(s);
	return rc;
}

static int
tls_opt_groups(struct tls_cfg *c, const struct strata_option *o,
    struct strata_error *err)
{
	SSL_CTX *scratch = SSL_CTX_new(TLS_method());
	char *s = strata_strdup_(o->value), *save = NULL, *tok;
	int rc = -1;

	if (!scratch || !s) {
		cfg_fail(err, "out of memory");
		goto out;
	}
	for (tok = strtok_r(s, ":", &save); tok;
	    tok = strtok_r(NULL, ":", &save))
		if (SSL_CTX_set1_groups_list(scratch, tok) != 1) {
			cfg_fail(err, "groups: unknown group '%s'", tok);
			goto out;
		}
	if (SSL_CTX_set1_groups_list(c->ctx, o->value) != 1) {
		cfg_fail(err, "bad value '%s' for groups", o->value);
		goto out;
	}
	rc = 0;
out:
	SSL_CTX_free(scratch);
	strata_free_(s);
	return rc;
}

static int
tls_is_ip(const char *s)
{
	unsigned char a[16];

	return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

/* ---- server tickets from a shared key file ---- */

static int
tls_ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv,
    EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc)
{
	const struct tls_cfg *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	const struct tls_ticket_key *k = NULL;
	OSSL_PARAM params[3];
	size_t i;

	if (enc) {
		k = &c->tkeys[0];
		memcpy(name, k->name, 16);
		if (RAND_bytes(iv, 16) != 1)
			return -1;
	} else {
		for (i = 0; i < c->ntkeys && !k; i++)
			if (!memcmp(name, c->tkeys[i].name, 16))
				k = &c->tkeys[i];
		if (!k)
			return 0; /* unknown key: a full handshake */
	}
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY,
	    (void *)k->hmac, sizeof(k->hmac));
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
	    (char *)"SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_CTX_set_params(hctx, params) ||
	    !EVP_CipherInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv, enc))
		return -1;
	/* decrypted with an older key: issue a new ticket */
	return !enc && k != &c->tkeys[0] ? 2 : 1;
}

static int
tls_opt_tickets(struct tls_cfg *c, const char *path, struct strata_error *err)
{
	unsigned char buf[TLS_TICKET_KEY_LEN * TLS_MAX_TICKET_KEYS + 1];
	FILE *f = fopen(path, "rb");
	size_t n, i;

	if (!f)
		return cfg_fail(err, "tickets: cannot read '%s': %s", path,
		    strerror(errno));
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	if (!n || n % TLS_TICKET_KEY_LEN || n == sizeof(buf))
		return cfg_fail(err, "tickets: '%s' must hold 1 to %d keys of "
				     "%d bytes (openssl rand 80 > FILE)", path,
		    TLS_MAX_TICKET_KEYS, TLS_TICKET_KEY_LEN);
	c->ntkeys = n / TLS_TICKET_KEY_LEN;
	if (!(c->tkeys = strata_calloc_(c->ntkeys, sizeof(*c->tkeys))))
		return cfg_fail(err, "out of memory");
	/* nginx's layout: name, HMAC secret, AES key */
	for (i = 0; i < c->ntkeys; i++) {
		const unsigned char *k = buf + i * TLS_TICKET_KEY_LEN;
		memcpy(c->tkeys[i].name, k, 16);
		memcpy(c->tkeys[i].hmac, k + 16, 32);
		memcpy(c->tkeys[i].aes, k + 48, 32);
	}
	OPENSSL_cleanse(buf, sizeof(buf));
	SSL_CTX_set_tlsext_ticket_key_evp_cb(c->ctx, tls_ticket_cb);
	return 0;
}

/* ---- key log ---- */

static void
tls_keylog_cb(const SSL *ssl, const char *line)
{
	const struct tls_cfg *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	char buf[512];
	int n;

	if (c->keylog_fd < 0)
		return;
	n = snprintf(buf, sizeof(buf), "%s\n", line);
	/* one write per line: O_APPEND keeps lines whole across processes */
	if (n > 0 && (size_t)n < sizeof(buf) &&
	    write(c->keylog_fd, buf, (size_t)n) < 0)
		strata_warn_("tls: keylog: %s", strerror(errno));
}

/* ---- ALPN, sessions, verification callbacks ---- */

static int
tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	const struct tls_cfg *c = arg;
	size_t i, j;

	(void)ssl;
	/* the server's order wins */
	for (i = 0; i < c->alpn_len; i += 1 + c->alpn[i])
		for (j = 0; j < inlen; j += 1u + in[j])
			if (in[j] == c->alpn[i] && j + 1 + in[j] <= inlen &&
			    !memcmp(in + j + 1, c->alpn + i + 1, in[j])) {
				*out = c->alpn + i + 1;
				*outlen = c->alpn[i];
				return SSL_TLSEXT_ERR_OK;
			}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int
tls_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct tls *t = tls_of_ssl(ssl);
	SSL_SESSION *copy;

	if (!t || t->server || !t->cfg->resume || !t->cache_key)
		return 0;
	/* a copy: SSL_free() marks the connection's own session not
	 * resumable when it ends without close_notify (bufferevent_free) */
	if ((copy = SSL_SESSION_dup(sess)) != NULL)
		tls_cache_put(t->cache_key, copy);
	return 0;
}

static void
tls_time_text(const ASN1_TIME *at, char *buf, size_t len)
{
	struct tm tm;

	if (!at || !ASN1_TIME_to_tm(at, &tm) ||
	    !strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(buf, len, "?");
}

static void
tls_name_text(const X509_NAME *n, char *buf, size_t len)
{
	BIO *b = BIO_new(BIO_s_mem());
	int r = 0;

	if (b && X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253) >= 0)
		r = BIO_read(b, buf, (int)len - 1);
	buf[r > 0 ? r : 0] = 0;
	BIO_free(b);
}

/* The DNS names and IP addresses of @p x (or its CN), comma-separated. */
static void
tls_cert_names(X509 *x, char *buf, size_t len)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL,
	    NULL);
	size_t off = 0;
	int i;

	buf[0] = 0;
	for (i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		char ip[INET6_ADDRSTRLEN] = "";
		const char *s = NULL;
		if (g->type == GEN_DNS)
			s = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
		else if (g->type == GEN_IPADD && (g->d.iPAddress->length == 4 ||
			     g->d.iPAddress->length == 16))
			s = inet_ntop(g->d.iPAddress->length == 4 ? AF_INET
								  : AF_INET6,
			    g->d.iPAddress->data, ip, sizeof(ip));
		if (s && off < len)
			off += (size_t)snprintf(buf + off, len - off, "%s%s",
			    off ? ", " : "", s);
	}
	GENERAL_NAMES_free(gens);
	if (!buf[0])
		tls_name_text(X509_get_subject_name(x), buf, len);
}

/* Keep the first reason verification failed (the buffer is made only
 * then: a connection that verifies never has one). */
static void
tls_set_verr(struct tls *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
tls_set_verr(struct tls *t, const char *fmt, ...)
{
	char buf[400];
	va_list ap;

	if (t->verr)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	t->verr = strata_strdup_(buf); /* NULL: OpenSSL's own reason is used */
}

static const char *tls_client_expect(struct tls *t, char *host,
    size_t hlen, char *addr, size_t alen);

static void
tls_verify_detail(struct tls *t, X509_STORE_CTX *sctx)
{
	int code = X509_STORE_CTX_get_error(sctx);
	X509 *x = X509_STORE_CTX_get_current_cert(sctx);
	char subj[96] = "?", issuer[96] = "?", names[96] = "", when[40];
	char host[128], addr[160];
	const char *expect;

	if (x) {
		tls_name_text(X509_get_subject_name(x), subj, sizeof(subj));
		tls_name_text(X509_get_issuer_name(x), issuer, sizeof(issuer));
	}
	switch (code) {
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		if (x)
			tls_cert_names(x, names, sizeof(names));
		expect = tls_client_expect(t, host, sizeof(host), addr,
		    sizeof(addr));
		tls_set_verr(t, "hostname mismatch: expected '%s', the "
		    "certificate is for %s", expect ? expect : "?", names);
		break;
	case X509_V_ERR_CERT_HAS_EXPIRED:
		tls_time_text(x ? X509_get0_notAfter(x) : NULL, when,
		    sizeof(when));
		tls_set_verr(t, "certificate expired on %s ('%s')", when, subj);
		break;
	case X509_V_ERR_CERT_NOT_YET_VALID:
		tls_time_text(x ? X509_get0_notBefore(x) : NULL, when,
		    sizeof(when));
		tls_set_verr(t, "certificate not yet valid: valid from %s "
		    "('%s')", when, subj);
		break;
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
		tls_set_verr(t, "untrusted issuer: '%s' (of '%s') is not a "
		    "trusted CA", issuer, subj);
		break;
	default:
		tls_set_verr(t, "%s ('%s')",
		    X509_verify_cert_error_string(code), subj);
	}
}

static struct tls *
tls_of_store(X509_STORE_CTX *sctx)
{
	return tls_of_ssl(X509_STORE_CTX_get_ex_data(sctx,
	    SSL_get_ex_data_X509_STORE_CTX_idx()));
}

static int
tls_verify_cb(int ok, X509_STORE_CTX *sctx)
{
	struct tls *t = tls_of_store(sctx);

	/* verify=none: OpenSSL verifies anyway and ignores the result */
	if (!ok && t && !t->verr &&
	    SSL_get_verify_mode(t->ssl) != SSL_VERIFY_NONE)
		tls_verify_detail(t, sctx);
	return ok;
}

/* pin=: the leaf's public key must be one of the pinned ones; nothing
 * else of the chain matters. */
static int
tls_pin_verify(X509_STORE_CTX *sctx, void *arg)
{
	const struct tls_cfg *c = arg;
	struct tls *t = tls_of_store(sctx);
	X509 *leaf = X509_STORE_CTX_get0_cert(sctx);
	unsigned char *der = NULL, md[32];
	char b64[48] = "?";
	int len;
	size_t i;

	len = leaf ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(leaf), &der) : -1;
	if (len > 0 && EVP_Digest(der, (size_t)len, md, NULL, EVP_sha256(),
			   NULL)) {
		for (i = 0; i < c->npins; i++)
			if (!CRYPTO_memcmp(md, c->pins[i], 32)) {
				OPENSSL_free(der);
				return 1;
			}
		EVP_EncodeBlock((unsigned char *)b64, md, 32);
	}
	OPENSSL_free(der);
	if (t)
		tls_set_verr(t, "pin mismatch: the peer's key is sha256:%s, "
		    "not a pinned one", b64);
	X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);
	return 0;
}

/* ---- config ---- */

static void
tls_config_free(void *cfgv)
{
	struct tls_cfg *c = cfgv;
	size_t i;

	if (!c)
		return;
	pthread_mutex_destroy(&c->store_lock);
	SSL_CTX_free(c->ctx);
	for (i = 0; i < c->npairs; i++)
		tls_pair_clear(&c->pairs[i]);
	if (c->tkeys)
		OPENSSL_cleanse(c->tkeys, c->ntkeys * sizeof(*c->tkeys));
	strata_free_(c->tkeys);
	strata_free_(c->alpn);
	strata_free_(c->name);
	strata_free_(c->sni);
	if (c->keylog_fd >= 0)
		close(c->keylog_fd);
	strata_free_(c);
}

/* Options that only set a value, checked once each. */
static int
tls_opt_simple(struct tls_cfg *c, const struct strata_option *o,
    struct strata_error *err)
{
	static const char *const roles[] = {"client", "server", NULL};
	static const char *const verifies[] = {"none", "optional",
	    "required", NULL};
	static const char *const dirties[] = {"error", "allow", NULL};

	if (!strcmp(o->key, "role"))
		return strata_opt_enum(TLS_NAME, o, roles, &c->role, err);
	if (!strcmp(o->key, "verify"))
		return strata_opt_enum(TLS_NAME, o, verifies, &c->verify, err);
	if (!strcmp(o->key, "dirty"))
		return strata_opt_enum(TLS_NAME, o, dirties, &c->dirty_allow,
		    err);
	if (!strcmp(o->key, "resume"))
		return strata_opt_bool(TLS_NAME, o, &c->resume, err);
	if (!strcmp(o->key, "handshake-timeout"))
		return strata_opt_msec(TLS_NAME, o, 1, 3600000,
		    &c->hs_timeout_ms, err);
	if (!strcmp(o->key, "name")) {
		if (!o->value[0])
			return cfg_fail(err, "name: empty");
		return (c->name = strata_strdup_(o->value)) ? 0
		    : cfg_fail(err, "out of memory");
	}
	if (!strcmp(o->key, "sni")) {
		if (!strcmp(o->value, "none")) {
			c->sni_off = 1;
			return 0;
		}
		if (!o->value[0] || tls_is_ip(o->value))
			return cfg_fail(err, "bad value '%s' for sni: expected "
					     "a host name (never an IP "
					     "address) or none", o->value);
		return (c->sni = strata_strdup_(o->value)) ? 0
		    : cfg_fail(err, "out of memory");
	}
	return 1; /* not a simple option */
}

/* Options that act on the SSL_CTX, in a fixed order. */
static int
tls_opt_ctx(struct tls_cfg *c, const struct strata_option *o,
    const struct strata_option *key, struct strata_error *err)
{
	if (!strcmp(o->key, "cert"))
		return tls_load_pairs(c, o->value, key ? key->value : NULL,
		    err);
	if (!strcmp(o->key, "ca")) {
		c->has_ca = 1;
		return tls_load_ca(c, o->value, err);
	}
	if (!strcmp(o->key, "pin"))
		return tls_opt_pins(c, o, err);
	if (!strcmp(o->key, "alpn"))
		return tls_opt_alpn(c, o, err);
	if (!strcmp(o->key, "ciphers"))
		return tls_opt_ciphers(c, o, 0, err);
	if (!strcmp(o->key, "ciphersuites"))
		return tls_opt_ciphers(c, o, 1, err);
	if (!strcmp(o->key, "groups"))
		return tls_opt_groups(c, o, err);
	if (!strcmp(o->key, "tickets"))
		return tls_opt_tickets(c, o->value, err);
	if (!strcmp(o->key, "keylog")) {
		c->keylog_fd = open(o->value, O_WRONLY | O_APPEND | O_CREAT |
		    O_CLOEXEC, 0600);
		if (c->keylog_fd < 0)
			return cfg_fail(err, "keylog: cannot open '%s': %s",
			    o->value, strerror(errno));
		SSL_CTX_set_keylog_callback(c->ctx, tls_keylog_cb);
		return 0;
	}
	return cfg_fail(err, "unknown option '%s'", o->key);
}

static SSL_CTX *
tls_ctx_new(struct tls_cfg *c)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());

	if (!ctx)
		return NULL;
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* no SSL_MODE_RELEASE_BUFFERS: it frees and reallocates the 16 KiB
	 * record buffers around every record; tls_input and tls_output free
	 * them once per call instead (tls_release) */
	SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_app_data(ctx, c);
	/* clients keep sessions in the process cache, servers use
	 * stateless tickets: no internal store */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_BOTH |
	    SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, tls_new_session);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)c->id,
	    (unsigned)strlen(c->id));
	if (SSL_CTX_set_cipher_list(ctx, tls_default_ciphers) != 1) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/*
 * A short hash of the options that make a session's security context:
 * a client resumes only sessions made with the same options (never one
 * made with weaker verification), a server only tickets issued under them
 * (its session id context). The ticket key file, the key log and timeouts
 * do not count: listeners that rotate ticket keys still resume.
 */
static void
tls_config_id(struct tls_cfg *c, const struct strata_option *opts, size_t n)
{
	static const char *const skip[] = {"tickets", "keylog",
	    "handshake-timeout", "dirty", "resume"};
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char h[32];
	size_t i, j;

	memset(h, 0, sizeof(h));
	if (md && EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		for (i = 0; i < n; i++) {
			for (j = 0; j < STRATA_ARRAY_LEN(skip); j++)
				if (!strcmp(opts[i].key, skip[j]))
					break;
			if (j < STRATA_ARRAY_LEN(skip))
				continue;
			EVP_DigestUpdate(md, opts[i].key, strlen(opts[i].key) + 1);
			EVP_DigestUpdate(md, opts[i].value,
			    strlen(opts[i].value) + 1);
		}
		EVP_DigestFinal_ex(md, h, NULL);
	}
	EVP_MD_CTX_free(md);
	for (i = 0; i < 8; i++)
		snprintf(c->id + 2 * i, 3, "%02x", h[i]);
}

static int
tls_config_versions(struct tls_cfg *c, const struct strata_option *opts,
    size_t n, struct strata_error *err)
{
	int min = TLS1_2_VERSION, max = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (!strcmp(opts[i].key, "min") &&
		    tls_opt_version(&opts[i], &min, err) < 0)
			return -1;
		if (!strcmp(opts[i].key, "max") &&
		    tls_opt_version(&opts[i], &max, err) < 0)
			return -1;
	}
	if (max && max < min)
		return cfg_fail(err, "min is above max");
	SSL_CTX_set_min_proto_version(c->ctx, min);
	SSL_CTX_set_max_proto_version(c->ctx, max);
	return 0;
}

static int
tls_config_apply(struct tls_cfg *c, const struct strata_option *opts,
    size_t n, struct strata_error *err)
{
	const struct strata_option *key = NULL, *cert = NULL;
	size_t i;
	int r;

	for (i = 0; i < n; i++) {
		if (!strcmp(opts[i].key, "key"))
			key = &opts[i];
		else if (!strcmp(opts[i].key, "cert"))
			cert = &opts[i];
	}
	if (key && !cert)
		return cfg_fail(err, "key: given without cert");
	if (tls_config_versions(c, opts, n, err) < 0)
		return -1;
	for (i = 0; i < n; i++) {
		const struct strata_option *o = &opts[i];
		if (!strcmp(o->key, "key") || !strcmp(o->key, "min") ||
		    !strcmp(o->key, "max"))
			continue;
		if ((r = tls_opt_simple(c, o, err)) < 0)
			return -1;
		if (r > 0 && tls_opt_ctx(c, o, key, err) < 0)
			return -1;
	}
	if (c->npins)
		SSL_CTX_set_cert_verify_callback(c->ctx, tls_pin_verify, c);
	if (c->alpn) {
		if (SSL_CTX_set_alpn_protos(c->ctx, c->alpn,
			(unsigned)c->alpn_len) != 0)
			return cfg_fail(err, "out of memory");
		SSL_CTX_set_alpn_select_cb(c->ctx, tls_alpn_select, c);
	}
	if (c->npairs > 1)
		SSL_CTX_set_cert_cb(c->ctx, tls_cert_cb, c);
	return 0;
}

static int
tls_config(void **cfgp, const struct strata_option *opts, size_t n,
    struct strata_error *err)
{
	struct tls_cfg *c = strata_calloc_(1, sizeof(*c));
	size_t i;

	pthread_once(&tls_bio_once, tls_bio_init);
	if (!c || !tls_bio_method) {
		strata_free_(c);
		return cfg_fail(err, "out of memory");
	}
	pthread_mutex_init(&c->store_lock, NULL);
	c->role = -1;
	c->verify = VERIFY_DEFAULT;
	c->resume = 1;
	c->keylog_fd = -1;
	c->hs_timeout_ms = TLS_HS_TIMEOUT_MS;
	tls_config_id(c, opts, n);
	if (!(c->ctx = tls_ctx_new(c))) {
		tls_config_free(c);
		return cfg_fail(err, "could not make an SSL_CTX");
	}
	if (tls_config_apply(c, opts, n, err) < 0 ||
	    (c->role == STRATA_ROLE_CLIENT && c->verify == VERIFY_OPTIONAL &&
		cfg_fail(err, TLS_CLIENT_OPTIONAL) < 0)) {
		for (i = 0; i < n && err; i++)
			if (strstr(err->message, opts[i].key) ==
			    err->message)
				err->position = opts[i].position;
		tls_config_free(c);
		return -1;
	}
	if (c->verify == VERIFY_NONE && !c->npins)
		strata_warn_("tls: verify=none: the peer's certificate will "
			     "not be checked");
	*cfgp = c;
	return 0;
}

/* ---- per connection ---- */

static void
tls_fail(struct tls *t, enum strata_error_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
tls_fail(struct tls *t, enum strata_error_code code, const char *fmt, ...)
{
	char msg[STRATA_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ERR_clear_error();
	if (t->failed)
		return;
	t->failed = 1;
	if (t->timer)
		evtimer_del(t->timer);
	strata_layer_fail(t->layer, code, "%s", msg);
}

/* The end of a batch of records: give OpenSSL's 16 KiB read and write
 * buffers back (it keeps any that still hold data), so that an idle
 * connection holds none, as SSL_MODE_RELEASE_BUFFERS did per record. */
static void
tls_release(struct tls *t)
{
	if (t->ssl)
		SSL_free_buffers(t->ssl);
}

/* Records written below from outside the output function. */
static void
tls_flush_side(struct tls *t)
{
	if (!t->wrote)
		return;
	t->wrote = 0;
	strata_layer_wrote_below(t->layer);
}

/* OpenSSL's reasons for the commonest handshake failures, explained. */
static const char *
tls_explain(const char *why)
{
	static const struct {
		const char *reason, *text;
	} map[] = {
		{"http request", "plaintext HTTP from the peer, not TLS"},
		{"https proxy request", "an HTTP proxy request, not TLS"},
		{"wrong version number", "not TLS from the peer"},
		{"unsupported protocol", "no TLS version both sides allow"},
		{"no shared cipher", "no cipher both sides allow"},
		{"no suitable key share", "no key exchange group both sides "
		    "allow"},
	};
	size_t i;

	for (i = 0; i < STRATA_ARRAY_LEN(map); i++)
		if (!strcmp(why, map[i].reason))
			return map[i].text;
	return NULL;
}

static void
tls_fail_handshake(struct tls *t, int e)
{
	const char *plain;
	char why[160];
	long vr = SSL_get_verify_result(t->ssl);

	if (t->verr) {
		tls_fail(t, STRATA_ERR_FILTER, "certificate verify failed: %s",
		    t->verr);
		return;
	}
	if (vr != X509_V_OK) {
		tls_fail(t, STRATA_ERR_FILTER, "certificate verify failed: %s",
		    X509_verify_cert_error_string(vr));
		return;
	}
	if (e == SSL_ERROR_SSL)
		tls_ossl_reason(why, sizeof(why));
	else
		snprintf(why, sizeof(why), "SSL error %d", e);
	if ((plain = tls_explain(why)) != NULL)
		tls_fail(t, STRATA_ERR_FILTER, "handshake failed: %s (%s)",
		    plain, why);
	else
		tls_fail(t, STRATA_ERR_FILTER, "handshake failed: %s%s",
		    strstr(why, "alert") ? "the peer sent an alert: " : "",
		    why);
}

static void
tls_established(struct tls *t)
{
	struct timeval now;

	t->done = 1;
	/* what only the handshake needed */
	event_free(t->timer);
	t->timer = NULL;
	strata_free_(t->verr);
	t->verr = NULL;
	gettimeofday(&now, NULL);
	t->hs_us = (now.tv_sec - t->t0.tv_sec) * 1000000L +
	    (now.tv_usec - t->t0.tv_usec);
	strata_layer_ready(t->layer);
	/* output held back during the handshake may go now */
	strata_layer_kick(t->layer);
}

/* 1: done, 0: in progress, -1: failed. */
static int
tls_handshake(struct tls *t)
{
	int r, e;

	ERR_clear_error();
	r = SSL_do_handshake(t->ssl);
	if (r == 1) {
		tls_established(t);
		return 1;
	}
	e = SSL_get_error(t->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return 0;
	tls_fail_handshake(t, e);
	return -1;
}

static void
tls_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct tls *t = arg;
	struct bufferevent *top = strata_layer_top(t->layer);

	(void)fd;
	(void)what;
	if (t->done || t->failed || !top)
		return;
	bufferevent_lock(top);
	tls_fail(t, STRATA_ERR_TIMEOUT, "handshake not complete after %llu ms",
	    (unsigned long long)t->cfg->hs_timeout_ms);
	bufferevent_unlock(top);
}

/*
 * The peer's host and address from the transport: "127.0.0.1" and
 * "127.0.0.1:443". The engine does not tell a transport's host name
 * (tcp://example.com:443) to filters yet, so the host is the address:
 * set name= (or sni=) to check a certificate by its DNS name.
 */
static void
tls_peer_host(struct tls *t, char *host, size_t hlen, char *addr,
    size_t alen)
{
	struct bufferevent *top = strata_layer_top(t->layer);
	const char *end;

	host[0] = addr[0] = 0;
	if (!top || strata_peer_address(top, addr, alen, NULL, NULL) <= 0)
		return;
	if (addr[0] == '[' && (end = strchr(addr, ']')) != NULL)
		snprintf(host, hlen, "%.*s", (int)(end - addr - 1), addr + 1);
	else if (addr[0] >= '0' && addr[0] <= '9' &&
	    (end = strrchr(addr, ':')) != NULL)
		snprintf(host, hlen, "%.*s", (int)(end - addr), addr);
}

/* The name a client checks the server's certificate against (and sends
 * as SNI unless sni= says otherwise): name=, sni=, the host of the stack
 * string, or the peer's address; NULL if there is none. */
static const char *
tls_client_expect(struct tls *t, char *host, size_t hlen, char *addr,
    size_t alen)
{
	const struct tls_cfg *c = t->cfg;
	const char *expect = c->name ? c->name : c->sni;

	tls_peer_host(t, host, hlen, addr, alen);
	if (!expect)
		expect = strata_layer_peer_name(t->layer);
	if (!expect && host[0])
		expect = host;
	return expect;
}

static int
tls_client_check_name(struct tls *t, const char *expect)
{
	SSL *ssl = t->ssl;

	if (tls_is_ip(expect))
		return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
		    expect) == 1 ? 0 : -1;
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	return SSL_set1_host(ssl, expect) == 1 ? 0 : -1;
}

/* SNI, the name to verify, and a cached session to resume. */
static int
tls_client_setup(struct tls *t)
{
	const struct tls_cfg *c = t->cfg;
	char host[128], addr[160], key[TLS_CACHE_KEY];
	const char *expect, *sni = NULL;
	SSL_SESSION *sess;

	expect = tls_client_expect(t, host, sizeof(host), addr, sizeof(addr));
	if (!c->sni_off) {
		sni = c->sni ? c->sni : expect;
		if (sni && !tls_is_ip(sni) &&
		    SSL_set_tlsext_host_name(t->ssl, sni) != 1)
			goto bad;
	}
	if (c->verify != VERIFY_NONE && !c->npins) {
		if (!expect) {
			tls_fail(t, STRATA_ERR_STATE, "no name to check the "
			    "server's certificate against: set name=, pin= "
			    "or verify=none");
			return -1;
		}
		if (tls_client_check_name(t, expect) < 0)
			goto bad;
	}
	if (c->resume) {
		snprintf(key, sizeof(key), "%s|%s|%s", c->id,
		    expect ? expect : "", addr);
		if (!(t->cache_key = strata_strdup_(key))) {
			tls_fail(t, STRATA_ERR_NOMEM, "out of memory");
			return -1;
		}
		if ((sess = tls_cache_get(t->cache_key)) != NULL) {
			SSL_set_session(t->ssl, sess);
			SSL_SESSION_free(sess);
		}
	}
	return 0;
bad:
	tls_fail(t, STRATA_ERR_OPTION, "bad name '%s'", expect ? expect : sni);
	return -1;
}

static void
tls_start(void *ctx)
{
	struct tls *t = ctx;
	uint64_t ms = t->cfg->hs_timeout_ms;
	struct timeval tv = {(time_t)(ms / 1000),
	    (suseconds_t)(ms % 1000) * 1000};

	if (t->started || t->failed)
		return;
	t->started = 1;
	gettimeofday(&t->t0, NULL);
	evtimer_add(t->timer, &tv);
	if (t->server)
		return; /* the ClientHello starts it */
	if (tls_client_setup(t) < 0)
		return;
	tls_handshake(t); /* the ClientHello */
	tls_flush_side(t);
}

/*
 * Load the system CA store into the shared SSL_CTX the first time a
 * connection will verify against it: a client without ca= or pin=, a
 * server asking for client certificates without ca=. Under a lock, before
 * SSL_new(), so no connection of this config is verifying meanwhile.
 */
/*
 * The system's trusted CAs, parsed once per process and shared by every
 * context that verifies against them (read-only; OpenSSL locks the
 * store's lookups): the whole ca-certificates bundle takes about 30 ms of
 * CPU and 1 MB per copy.
 */
static X509_STORE *tls_system_store;
static pthread_mutex_t tls_system_lock = PTHREAD_MUTEX_INITIALIZER;

static int
tls_use_system_store(SSL_CTX *ctx)
{
	int ok;

	pthread_mutex_lock(&tls_system_lock);
	if (!tls_system_store) { /* a failure is tried again next time */
		X509_STORE *st = X509_STORE_new();
		if (st && X509_STORE_set_default_paths(st) != 1) {
			X509_STORE_free(st);
			st = NULL;
		}
		tls_system_store = st;
	}
	ok = tls_system_store != NULL;
	if (ok)
		SSL_CTX_set1_cert_store(ctx, tls_system_store);
	pthread_mutex_unlock(&tls_system_lock);
	return ok;
}

static int
tls_need_store(const struct tls_cfg *cc, int server)
{
	/* the config is ours (made by tls_config), only handed on as const */
	struct tls_cfg *c = (struct tls_cfg *)(uintptr_t)cc;
	int ok = 1;

	if (c->has_ca || c->npins || c->verify == VERIFY_NONE ||
	    (server && c->verify == VERIFY_DEFAULT))
		return 0;
	pthread_mutex_lock(&c->store_lock);
	/* before any connection of this config made its SSL (each comes
	 * here first), so no handshake reads the store being replaced */
	if (!c->store_loaded)
		c->store_loaded = ok = tls_use_system_store(c->ctx);
	pthread_mutex_unlock(&c->store_lock);
	ERR_clear_error();
	return ok ? 0 : -1;
}

static void
tls_destroy(void *ctx)
{
	struct tls *t = ctx;

	if (t->timer)
		event_free(t->timer);
	SSL_free(t->ssl);
	strata_free_(t->cache_key);
	strata_free_(t->verr);
	strata_free_(t);
}

static void *
tls_create(const void *cfgv, struct strata_layer *layer,
    struct strata_error *err)
{
	const struct tls_cfg *c = cfgv;
	struct tls *t;
	BIO *bio;
	int mode = SSL_VERIFY_NONE;

	if (!c || !(t = strata_calloc_(1, sizeof(*t)))) {
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return NULL;
	}
	t->cfg = c;
	t->layer = layer;
	t->server = c->role >= 0 ? c->role == 1
				 : strata_layer_role(layer) == STRATA_ROLE_SERVER;
	if (t->server && !c->npairs) {
		strata_error_set(err, STRATA_ERR_OPTION, "a server needs cert= "
		    "(and key=), or cert=self-signed");
		strata_free_(t);
		return NULL;
	}
	if (!t->server && c->verify == VERIFY_OPTIONAL) {
		strata_error_set(err, STRATA_ERR_OPTION, TLS_CLIENT_OPTIONAL);
		strata_free_(t);
		return NULL;
	}
	if (tls_need_store(c, t->server) < 0) {
		strata_error_set(err, STRATA_ERR_OPTION, "ca: the system store "
		    "cannot be used");
		strata_free_(t);
		return NULL;
	}
	if ((t->ssl = SSL_new(c->ctx)) != NULL &&
	    (bio = BIO_new(tls_bio_method)) != NULL) {
		BIO_set_data(bio, t);
		SSL_set_bio(t->ssl, bio, bio); /* the SSL owns it now */
		t->timer = evtimer_new(strata_layer_base(layer), tls_timeout,
		    t);
	}
	if (!t->timer) {
		tls_destroy(t);
		strata_error_set(err, STRATA_ERR_NOMEM, "out of memory");
		return NULL;
	}
	if (t->server)
		mode = c->verify == VERIFY_REQUIRED
		    ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
		    : c->verify == VERIFY_OPTIONAL ? SSL_VERIFY_PEER
						   : SSL_VERIFY_NONE;
	else if (c->verify != VERIFY_NONE || c->npins)
		mode = SSL_VERIFY_PEER;
	SSL_set_verify(t->ssl, mode, tls_verify_cb);
	if (t->server)
		SSL_set_accept_state(t->ssl);
	else
		SSL_set_connect_state(t->ssl);
	return t;
}

/* ---- input: records from below, plaintext up ---- */

static int
tls_fail_io(struct tls *t, const char *what, int e)
{
	char why[160];

	if (e == SSL_ERROR_SSL)
		tls_ossl_reason(why, sizeof(why));
	else
		snprintf(why, sizeof(why), "SSL error %d", e);
	tls_fail(t, STRATA_ERR_FILTER, "%s failed: %s%s", what,
	    strstr(why, "alert") ? "the peer sent an alert: " : "", why);
	return -1;
}

/*
 * Decrypt whole records into dst while there is room: a record is started
 * while any of @p lim is left, and decrypted whole, so dst may go over the
 * limit by up to one record (16 KiB; libevent's bufferevent_openssl does
 * the same) and OpenSSL keeps no plaintext between calls, where nothing
 * would run it again (DESIGN trap 3). A record that fits a reader's read
 * high watermark only in part would otherwise never be delivered.
 */
static int
tls_read_loop(struct tls *t, struct evbuffer *src, struct evbuffer *dst,
    ev_ssize_t lim)
{
	size_t room = lim < 0 ? SIZE_MAX : (size_t)lim, made = 0;

	/* once per call: a successful SSL_read_ex leaves the queue empty,
	 * and the loop goes on only after a success */
	ERR_clear_error();
	for (;;) {
		size_t want = (size_t)SSL_pending(t->ssl), got = 0, rec;
		struct evbuffer_iovec v;
		unsigned char type;
		int e;

		if (room != SIZE_MAX && made >= room && !want)
			break;
		if (!want) {
			if (!(rec = tls_record_at(src, &type)))
				break; /* no whole record yet */
			want = rec > TLS_HEADER ? rec - TLS_HEADER : 1;
			if (want > TLS_PLAIN_MAX)
				want = TLS_PLAIN_MAX;
		}
		if (evbuffer_reserve_space(dst, (ev_ssize_t)want, &v, 1) < 1) {
			tls_fail(t, STRATA_ERR_NOMEM, "out of memory");
			return -1;
		}
		if (SSL_read_ex(t->ssl, v.iov_base, want, &got) == 1) {
			v.iov_len = got;
			evbuffer_commit_space(dst, &v, 1);
			made += got;
			continue;
		}
		e = SSL_get_error(t->ssl, 0);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			break;
		if (e == SSL_ERROR_ZERO_RETURN) {
			t->got_close = 1; /* the peer's close_notify */
			evbuffer_drain(src, evbuffer_get_length(src));
			/* EOF now, not at the transport's: a peer may wait
			 * for our close_notify before it closes (Python's
			 * unwrap(), SSL_shutdown() called twice) */
			strata_layer_input_end(t->layer);
			break;
		}
		return tls_fail_io(t, "read", e);
	}
	return 0;
}

/* The transport ended (BEV_FINISHED) and nothing more was decoded. */
static int
tls_input_end(struct tls *t, struct evbuffer *src)
{
	size_t left = evbuffer_get_length(src);

	if (t->got_close)
		return 0;
	if (!t->done) {
		tls_fail(t, STRATA_ERR_TRUNCATED, "connection closed during "
		    "the handshake");
		return -1;
	}
	if (left) {
		tls_fail(t, STRATA_ERR_TRUNCATED, "connection closed in the "
		    "middle of a record (%zu bytes of it received)", left);
		return -1;
	}
	if (t->cfg->dirty_allow)
		return 0;
	tls_fail(t, STRATA_ERR_TRUNCATED, "connection closed without "
	    "close_notify");
	return -1;
}

static int
tls_input_run(struct tls *t, struct evbuffer *src, struct evbuffer *dst,
    ev_ssize_t lim, enum bufferevent_flush_mode mode)
{
	size_t d0 = evbuffer_get_length(dst);
	int h;

	if (t->got_close) {
		/* nothing counts after close_notify (RFC 8446 6.1) */
		evbuffer_drain(src, evbuffer_get_length(src));
		return 0;
	}
	if (!t->done) {
		if ((h = tls_handshake(t)) < 0)
			return -1;
		if (h == 0)
			return mode == BEV_FINISHED ? tls_input_end(t, src) : 0;
	}
	if (tls_read_loop(t, src, dst, lim) < 0)
		return -1;
	/* deliver what was decoded first; the end is for the next call */
	if (mode == BEV_FINISHED && evbuffer_get_length(dst) == d0)
		return tls_input_end(t, src);
	return 0;
}

static enum bufferevent_filter_result
tls_input(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	struct tls *t = ctx;
	size_t s0 = evbuffer_get_length(src), d0 = evbuffer_get_length(dst);
	int r, wrote;

	if (t->failed)
		return BEV_ERROR;
	if (!t->started)
		tls_start(t);
	if (t->failed)
		return BEV_ERROR;
	t->rsrc = src;
	r = tls_input_run(t, src, dst, lim, mode);
	t->rsrc = NULL;
	tls_release(t);
	wrote = t->wrote;
	tls_flush_side(t);
	if (r < 0 || t->failed)
		return BEV_ERROR;
	if (evbuffer_get_length(src) != s0 || evbuffer_get_length(dst) != d0 ||
	    wrote)
		return BEV_OK;
	return BEV_NEED_MORE;
}

/* ---- output: plaintext from above, records below ---- */

/*
 * Encrypt from @p src into @p dst (the buffer below), straight from the
 * evbuffer's memory, in records of up to 16 KiB, within @p lim counting
 * each record's overhead.
 */
static int
tls_write_loop(struct tls *t, struct evbuffer *src, struct evbuffer *dst,
    ev_ssize_t lim)
{
	size_t budget = lim < 0 ? SIZE_MAX : (size_t)lim, moved = 0, len;

	ERR_clear_error(); /* once: the loop goes on only after a success */
	while ((len = evbuffer_get_length(src)) > 0) {
		size_t n = len < TLS_PLAIN_MAX ? len : TLS_PLAIN_MAX, w = 0;
		unsigned char *p;

		if (budget != SIZE_MAX) {
			if (budget > TLS_REC_OVERHEAD) {
				if (n > budget - TLS_REC_OVERHEAD)
					n = budget - TLS_REC_OVERHEAD;
			} else if (moved || evbuffer_get_length(dst))
				break;
			else if (n > 256)
				n = 256;
		}
		if (!(p = evbuffer_pullup(src, (ev_ssize_t)n))) {
			tls_fail(t, STRATA_ERR_NOMEM, "out of memory");
			return -1;
		}
		if (SSL_write_ex(t->ssl, p, n, &w) != 1) {
			int e = SSL_get_error(t->ssl, 0);
			if (e == SSL_ERROR_WANT_READ ||
			    e == SSL_ERROR_WANT_WRITE)
				break;
			return tls_fail_io(t, "write", e);
		}
		evbuffer_drain(src, w);
		moved += w;
		if (budget != SIZE_MAX)
			budget = budget > w + TLS_REC_OVERHEAD
			    ? budget - w - TLS_REC_OVERHEAD : 0;
	}
	return 0;
}

static int
tls_send_close(struct tls *t)
{
	int r;

	ERR_clear_error();
	r = SSL_shutdown(t->ssl);
	t->sent_close = 1;
	if (r < 0) {
		int e = SSL_get_error(t->ssl, r);
		if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
			return tls_fail_io(t, "close_notify", e);
	}
	return 0;
}

static enum bufferevent_filter_result
tls_output(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *ctx)
{
	struct tls *t = ctx;
	size_t s0 = evbuffer_get_length(src), d0 = evbuffer_get_length(dst);
	int r;

	if (t->failed)
		return BEV_ERROR;
	if (mode == BEV_FINISHED)
		t->fin_pending = 1;
	if (t->sent_close) {
		if (!s0)
			return BEV_NEED_MORE;
		tls_fail(t, STRATA_ERR_STATE, "write after close_notify");
		return BEV_ERROR;
	}
	if (!t->done)
		return BEV_NEED_MORE; /* sent once the handshake is done */
	r = tls_write_loop(t, src, dst, lim);
	if (r == 0 && t->fin_pending && !evbuffer_get_length(src))
		r = tls_send_close(t);
	t->wrote = 0; /* into dst: the engine counts it */
	tls_release(t);
	if (r < 0 || t->failed)
		return BEV_ERROR;
	if (evbuffer_get_length(src) != s0 || evbuffer_get_length(dst) != d0)
		return BEV_OK;
	return BEV_NEED_MORE;
}

/* ---- statistics ---- */

static void
tls_stats(const void *ctx, struct strata_stats_sink *sink)
{
	const struct tls *t = ctx;
	const unsigned char *alpn = NULL;
	unsigned alpn_len = 0;
	const char *sni;
	X509 *peer;
	char subj[160];

	strata_stat(sink, "role", "%s", t->server ? "server" : "client");
	if (!t->done) {
		strata_stat(sink, "state", "%s",
		    t->failed ? "failed" : "handshake");
		return;
	}
	strata_stat(sink, "version", "%s", SSL_get_version(t->ssl));
	strata_stat(sink, "cipher", "%s", SSL_get_cipher_name(t->ssl));
	SSL_get0_alpn_selected(t->ssl, &alpn, &alpn_len);
	if (alpn_len)
		strata_stat(sink, "alpn", "%.*s", (int)alpn_len, alpn);
	strata_stat(sink, "resumed", "%s",
	    SSL_session_reused(t->ssl) ? "yes" : "no");
	strata_stat(sink, "handshake", "%ld.%03ldms", t->hs_us / 1000,
	    t->hs_us % 1000);
	if (t->server &&
	    (sni = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name)))
		strata_stat(sink, "sni", "%s", sni);
	if ((peer = SSL_get0_peer_certificate(t->ssl)) != NULL) {
		tls_name_text(X509_get_subject_name(peer), subj, sizeof(subj));
		strata_stat(sink, "peer", "\"%s\"", subj);
	}
	if (t->got_close || t->sent_close)
		strata_stat(sink, "close_notify", "%s%s",
		    t->got_close ? "received" : "",
		    t->got_close && t->sent_close ? ",sent"
		    : t->sent_close ? "sent" : "");
}

const struct strata_filter_type strata_tls_filter_ = {
	.name = "tls",
	.summary = "TLS 1.2/1.3 (OpenSSL): verified by default, ALPN, "
		   "resumption, close_notify",
	.options = tls_options,
	.flags = STRATA_FILTER_GATES_CONNECT,
	.config = tls_config,
	.config_free = tls_config_free,
	.create = tls_create,
	.destroy = tls_destroy,
	.input = tls_input,
	.output = tls_output,
	.start = tls_start,
	.stats = tls_stats,
};
