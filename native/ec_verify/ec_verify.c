// ECDSA verification of a CSR's self-signature with a public key seen once: src/ca/ec_verify.ts
// asks here instead of node:crypto because importing a fresh key costs node:crypto more than the
// verification itself. Node builds an EVP_PKEY for every key (EC_KEY_new_by_curve_name, which
// creates the curve's group anew, plus a full EC_KEY_check_key scalar multiplication, plus a copy
// into OpenSSL 3's provider on first use): bench:ca measured 83-128 µs for that against 74-104 µs
// for the verify. Here each thread keeps its curves' groups, decodes the point against them and
// verifies with OpenSSL's ECDSA directly, so a fresh key costs ~2 µs beyond the verify.
//
// Checking only that the point is on the curve and not the point at infinity is a full public-key
// validation for P-256 and P-384: their cofactor is 1, so every such point has the group's prime
// order (SP 800-56A rev. 3, 5.6.2.3.3). ECDSA_verify refuses a signature that is not strict DER.
//
// The symbols come from the OpenSSL that Node itself links statically and exports to addons, and
// the headers from <node prefix>/include/node/openssl, so they always agree. The EC_KEY calls are
// deprecated in OpenSSL 3 (not removed); they are the only way past the provider's per-key cost.
//
// verifyEcdsa(curveBits, hashBits, point, message, signature) -> 0 | 1 | 2
//   curveBits: 256 (P-256) or 384 (P-384); hashBits: 256, 384 or 512 (SHA-2);
//   point: the uncompressed point (0x04 || X || Y); message: the signed bytes; signature: DER.
//   0: the signature verifies; 1: it does not; 2: the point is not a valid key on that curve.
// Bad arguments throw a TypeError; an allocation failure throws an Error.

#define OPENSSL_SUPPRESS_DEPRECATED
#include <stdint.h>
#include <stdlib.h>
#include <node_api.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/sha.h>

#define VERIFIED 0
#define NOT_VERIFIED 1
#define BAD_KEY 2

#define CHECK(env, call)                                                   \
  do {                                                                     \
    if ((call) != napi_ok) {                                               \
      napi_throw_error((env), "EADDON", "ec_verify: " #call " failed");    \
      return NULL;                                                         \
    }                                                                      \
  } while (0)

// One per Node environment (the main thread and each worker), so no group is shared between threads.
typedef struct {
  EC_GROUP* p256;
  EC_GROUP* p384;
} Curves;

static void free_curves(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  Curves* curves = data;
  EC_GROUP_free(curves->p256);
  EC_GROUP_free(curves->p384);
  free(curves);
}

typedef struct {
  const uint8_t* data;
  size_t length;
} Bytes;

static int bytes_of(napi_env env, napi_value value, Bytes* out) {
  bool is_typed_array = false;
  if (napi_is_typedarray(env, value, &is_typed_array) != napi_ok || !is_typed_array) return 0;
  napi_typedarray_type type;
  void* data = NULL;
  size_t length = 0;
  if (napi_get_typedarray_info(env, value, &type, &length, &data, NULL, NULL) != napi_ok || type != napi_uint8_array) return 0;
  // An empty view may have no backing store; any non-null address will do for zero bytes.
  out->data = data == NULL ? (const uint8_t*)"" : data;
  out->length = length;
  return 1;
}

static int int_of(napi_env env, napi_value value, int32_t* out) {
  napi_valuetype type;
  return napi_typeof(env, value, &type) == napi_ok && type == napi_number && napi_get_value_int32(env, value, out) == napi_ok;
}

static napi_value result(napi_env env, int32_t code) {
  napi_value v;
  CHECK(env, napi_create_int32(env, code, &v));
  return v;
}

static napi_value verify_ecdsa(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  Curves* curves = NULL;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(env, napi_get_instance_data(env, (void**)&curves));
  int32_t curve_bits = 0, hash_bits = 0;
  Bytes point, message, signature;
  if (argc != 5 || !int_of(env, argv[0], &curve_bits) || !int_of(env, argv[1], &hash_bits) ||
      !bytes_of(env, argv[2], &point) || !bytes_of(env, argv[3], &message) || !bytes_of(env, argv[4], &signature)) {
    napi_throw_type_error(env, "EINVAL", "verifyEcdsa(curveBits, hashBits, point, message, signature): two numbers, then three Uint8Arrays");
    return NULL;
  }
  const EC_GROUP* group = curve_bits == 256 ? curves->p256 : curve_bits == 384 ? curves->p384 : NULL;
  if (group == NULL) {
    napi_throw_type_error(env, "EINVAL", "verifyEcdsa: curveBits must be 256 (P-256) or 384 (P-384)");
    return NULL;
  }
  uint8_t digest[SHA512_DIGEST_LENGTH];
  int digest_length;
  switch (hash_bits) {
    case 256: SHA256(message.data, message.length, digest); digest_length = SHA256_DIGEST_LENGTH; break;
    case 384: SHA384(message.data, message.length, digest); digest_length = SHA384_DIGEST_LENGTH; break;
    case 512: SHA512(message.data, message.length, digest); digest_length = SHA512_DIGEST_LENGTH; break;
    default:
      napi_throw_type_error(env, "EINVAL", "verifyEcdsa: hashBits must be 256, 384 or 512");
      return NULL;
  }
  // DER lengths are ints to OpenSSL; anything near that is no signature of these curves.
  if (signature.length > 1024) return result(env, NOT_VERIFIED);

  EC_POINT* q = EC_POINT_new(group);
  EC_KEY* key = EC_KEY_new();
  if (q == NULL || key == NULL) {
    EC_POINT_free(q);
    EC_KEY_free(key);
    napi_throw_error(env, "ENOMEM", "verifyEcdsa: out of memory");
    return NULL;
  }
  int32_t code;
  // oct2point refuses a point off the curve; the one-byte encoding of infinity is refused here.
  if (EC_POINT_oct2point(group, q, point.data, point.length, NULL) != 1 || EC_POINT_is_at_infinity(group, q)) {
    code = BAD_KEY;
  } else if (EC_KEY_set_group(key, group) != 1 || EC_KEY_set_public_key(key, q) != 1) {
    code = BAD_KEY;
  } else {
    // 1 verified, 0 not, -1 malformed (not strict DER, or r or s out of range): only 1 passes.
    code = ECDSA_verify(0, digest, digest_length, signature.data, (int)signature.length, key) == 1 ? VERIFIED : NOT_VERIFIED;
  }
  EC_KEY_free(key);
  EC_POINT_free(q);
  // A refused point or signature leaves errors on this thread's OpenSSL queue, where a later
  // node:crypto call on the thread could mistake them for its own.
  ERR_clear_error();
  return result(env, code);
}

NAPI_MODULE_INIT() {
  Curves* curves = calloc(1, sizeof(Curves));
  if (curves == NULL) {
    napi_throw_error(env, "ENOMEM", "ec_verify: out of memory");
    return NULL;
  }
  curves->p256 = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
  curves->p384 = EC_GROUP_new_by_curve_name(NID_secp384r1);
  if (curves->p256 == NULL || curves->p384 == NULL) {
    free_curves(env, curves, NULL);
    napi_throw_error(env, "EADDON", "ec_verify: OpenSSL has no P-256 or P-384 group");
    return NULL;
  }
  CHECK(env, napi_set_instance_data(env, curves, free_curves, NULL));
  napi_value fn;
  CHECK(env, napi_create_function(env, "verifyEcdsa", NAPI_AUTO_LENGTH, verify_ecdsa, NULL, &fn));
  CHECK(env, napi_set_named_property(env, exports, "verifyEcdsa", fn));
  return exports;
}
