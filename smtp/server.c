/* smtp/server.c: placeholder, being written */
typedef int placeholder_server;
