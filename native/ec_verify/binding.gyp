{
  "targets": [
    {
      "target_name": "ec_verify",
      "sources": ["ec_verify.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2"],
      "xcode_settings": { "OTHER_CFLAGS": ["-Wall", "-Wextra", "-Werror", "-O2"] }
    }
  ]
}
