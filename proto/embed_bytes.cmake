# cmake -DIN=FILE -DOUT=FILE.c -DNAME=SYMBOL -P embed_bytes.cmake: writes FILE's bytes as the C
# array `const unsigned char SYMBOL[]` and `const size_t SYMBOL_len` (proto/descriptor_set.h).
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n_hex)
math(EXPR n_bytes "${n_hex} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n    " bytes "${bytes}")
file(WRITE ${OUT} "/* Generated from ${IN} by proto/embed_bytes.cmake. */\n"
                  "#include \"descriptor_set.h\"\n\n"
                  "const unsigned char ${NAME}[] = {\n    ${bytes}\n};\n"
                  "const size_t ${NAME}_len = ${n_bytes};\n")
