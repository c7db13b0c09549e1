/* smtp/tls.c: placeholder, being written */
typedef int placeholder_tls;
