/* smtp/parse.c: placeholder, being written */
typedef int placeholder_parse;
