/* smtp/session.c: placeholder, being written */
typedef int placeholder_session;
