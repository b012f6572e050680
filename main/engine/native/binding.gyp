{
  "targets": [
    {
      "target_name": "addcow_native",
      "sources": ["src/addcow-native.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE", "_FILE_OFFSET_BITS=64"]
    }
  ]
}
