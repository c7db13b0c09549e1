/* smtp/data.c: placeholder, being written */
typedef int placeholder_data;
